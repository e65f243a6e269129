//! `KvCache`: each decoder layer's keys (M-RoPE applied) and values for the tokens seen so far,
//! preallocated on the backend for a fixed number of tokens so that decoding never allocates.
//!
//! This module owns the storage and its bookkeeping; it must not compute keys or values.

use super::config::TextConfig;
use crate::backend::cpu::{CpuBackend, CPU};
use crate::backend::{Backend, DeviceBuffer, Slice};
use crate::model::ModelError;

/// Keys and values of every layer, token-major: row `i` of a layer is token `i`'s
/// `[kv_heads, head_dim]`, the layout `attention` reads.
pub struct KvCache<B: Backend = CpuBackend> {
    kv_dim: usize,
    capacity: usize,
    len: usize,
    keys: Vec<B::Buffer>,
    values: Vec<B::Buffer>,
}

impl KvCache<CpuBackend> {
    /// [`KvCache::try_new_on`] the CPU.
    pub fn try_new(config: &TextConfig, capacity: usize) -> Result<Self, ModelError> {
        Self::try_new_on(&CPU, config, capacity)
    }

    /// Room for `capacity` tokens in every layer of `config` on the CPU; a capacity too large for
    /// memory panics (use [`KvCache::try_new`] for a capacity from user input).
    pub fn new(config: &TextConfig, capacity: usize) -> Self {
        match Self::try_new(config, capacity) {
            Ok(cache) => cache,
            Err(e) => panic!("KvCache::new: {e}"),
        }
    }

    /// Layer `l`'s keys and values of the stored tokens, each `[len, kv_heads · head_dim]`;
    /// empty slices for a layer that does not exist.
    pub fn layer(&self, l: usize) -> (&[f32], &[f32]) {
        let end = self.len * self.kv_dim;
        match (self.keys.get(l), self.values.get(l)) {
            (Some(k), Some(v)) => (&k[..end], &v[..end]),
            _ => (&[], &[]),
        }
    }
}

impl<B: Backend> KvCache<B> {
    /// Room for `capacity` tokens in every layer of `config`, allocated now on `backend`; an
    /// allocation that cannot be made (a capacity from user input, too large for memory) is an
    /// error, not an abort.
    pub fn try_new_on(
        backend: &B,
        config: &TextConfig,
        capacity: usize,
    ) -> Result<Self, ModelError> {
        let kv_dim = config.kv_dim();
        let too_large = || ModelError::ContextFull {
            needed: capacity,
            used: 0,
            capacity: 0,
        };
        let size = capacity.checked_mul(kv_dim).ok_or_else(too_large)?;
        let buffers = || -> Result<Vec<B::Buffer>, ModelError> {
            (0..config.layers)
                .map(|_| backend.alloc(size).map_err(|_| too_large()))
                .collect()
        };
        Ok(KvCache {
            kv_dim,
            capacity,
            len: 0,
            keys: buffers()?,
            values: buffers()?,
        })
    }

    /// Tokens stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every token (the storage stays).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets the tokens after the first `len` (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn n_layers(&self) -> usize {
        self.keys.len()
    }

    /// Layer `l`'s keys and values of the stored tokens on the backend (`l` < `n_layers()`).
    pub fn layer_slices(&self, l: usize) -> (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>) {
        let end = self.len * self.kv_dim;
        (self.keys[l].slice(..end), self.values[l].slice(..end))
    }

    /// Errors unless `n` more tokens fit.
    pub(crate) fn check_room(&self, n: usize) -> Result<(), ModelError> {
        match self.len.checked_add(n) {
            Some(total) if total <= self.capacity => Ok(()),
            _ => Err(ModelError::ContextFull {
                needed: n,
                used: self.len,
                capacity: self.capacity,
            }),
        }
    }

    /// Layer `l`'s whole key and value storage (stored tokens, then free rows), for a forward
    /// pass that writes `n` new rows after `len()` and then reads all of them.
    pub(crate) fn layer_storage_mut(
        &mut self,
        l: usize,
    ) -> Option<(&mut B::Buffer, &mut B::Buffer)> {
        Some((self.keys.get_mut(l)?, self.values.get_mut(l)?))
    }

    /// Counts `n` rows written past `len()` by a forward pass (which checked the room first).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_dim
    }
}
