//! Device buffers and the ledger of device memory: every buffer the backend creates is counted
//! here (activations, weights, group slots, working memory, read-back staging), so that the bytes
//! allocated per phase are measured, not estimated.
//!
//! A buffer's id names it in the bind-group cache; when a buffer is dropped its id is queued so the
//! cache can forget the bind groups that still hold it (they would keep its memory alive).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::DeviceBuffer;

/// Device bytes in use and at peak, and the ids of dropped buffers not yet purged from caches.
#[derive(Debug, Default)]
pub struct Ledger {
    allocated: AtomicU64,
    peak: AtomicU64,
    next_id: AtomicU64,
    dropped: Mutex<Vec<u64>>,
}

impl Ledger {
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn reset_peak(&self) {
        self.peak.store(self.allocated(), Ordering::Relaxed);
    }

    /// Counts `bytes` and returns a fresh buffer id.
    pub fn add(&self, bytes: u64) -> u64 {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn remove(&self, id: u64, bytes: u64) {
        self.allocated.fetch_sub(bytes, Ordering::Relaxed);
        if let Ok(mut dropped) = self.dropped.lock() {
            dropped.push(id);
        }
    }

    /// The ids dropped since the last call.
    pub fn take_dropped(&self) -> Vec<u64> {
        self.dropped
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }
}

/// One device allocation, counted in its ledger for as long as it lives.
#[derive(Debug)]
pub struct RawBuffer {
    pub id: u64,
    pub buffer: wgpu::Buffer,
    pub bytes: u64,
    ledger: Arc<Ledger>,
}

impl RawBuffer {
    pub fn new(buffer: wgpu::Buffer, bytes: u64, ledger: &Arc<Ledger>) -> Self {
        RawBuffer {
            id: ledger.add(bytes),
            buffer,
            bytes,
            ledger: ledger.clone(),
        }
    }
}

impl Drop for RawBuffer {
    fn drop(&mut self) {
        // Not `destroy()`: commands recorded but not yet submitted may still use it. wgpu frees the
        // memory when the last of them (and the bind groups in the cache, purged by id) let go.
        self.ledger.remove(self.id, self.bytes);
    }
}

/// An f32 array on the device (`Default` is empty and holds no allocation).
#[derive(Debug, Default)]
pub struct WgpuBuffer {
    pub(super) raw: Option<Arc<RawBuffer>>,
    pub(super) len: usize,
}

impl DeviceBuffer for WgpuBuffer {
    fn len(&self) -> usize {
        self.len
    }
}
