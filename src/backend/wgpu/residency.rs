//! Expert-group uploads: reserving the slots, staging a group on any thread (repacked straight into
//! a mapped, host-visible buffer) and committing it to a slot with a copy in the command stream.

use std::sync::Arc;

use super::buffer::RawBuffer;
use super::slots::Slot;
use super::weights::{self, Home, WgpuWeight};
use super::{lock, Bind, WgpuBackend};
use crate::backend::op_error::param;
use crate::backend::BackendError;

/// A staged expert group: its slot image in a host-visible staging buffer, laid out as the
/// weights' parts say, ready to be copied into a slot by the device.
pub struct StagedGroup {
    group: usize,
    staging: Option<Arc<RawBuffer>>,
    bytes: u64,
}

impl WgpuBackend {
    pub(super) fn reserve_slots(&self, slots: usize, bytes: u64) -> Result<(), BackendError> {
        let mut s = lock(&self.slots);
        s.slots.clear();
        for _ in 0..slots {
            let raw = self.create(
                bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                "an expert-group slot",
                false,
            )?;
            s.slots.push(Slot {
                raw,
                group: None,
                stamp: 0,
            });
        }
        Ok(())
    }

    pub(super) fn stage(
        &self,
        group: usize,
        weights: &[&WgpuWeight<'_>],
    ) -> Result<StagedGroup, BackendError> {
        let total = weights.iter().fold(0, |at, w| w.slot_end(at));
        if total == 0 {
            return Ok(StagedGroup {
                group,
                staging: None,
                bytes: 0,
            });
        }
        let size = total.div_ceil(4) * 4;
        if size > self.limits.max_buffer_size {
            return Err(BackendError::TooLarge {
                what: format!("expert group {group}"),
                bytes: size,
                limit: self.limits.max_buffer_size,
                limit_name: "buffer",
            });
        }
        // Host-visible memory written in place (zero-filled by wgpu, so alignment gaps are 0), then
        // copied into the slot by the device: no second host copy, and nothing to wait for.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("latte group staging"),
            size,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::OutOfMemory {
                what: format!("staging expert group {group} ({e})"),
                bytes: size,
                allocated: self.ledger.allocated(),
            });
        }
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| BackendError::Device(format!("staging expert group {group}: {e}")))?;
            let mut part_bytes = Vec::new();
            let mut at = 0;
            for w in weights {
                if !matches!(w.home, Home::Group(g) if g == group) {
                    return Err(param(
                        "stage_group",
                        format!("weight '{}' is not in group {group}", w.view.name()),
                    )
                    .into());
                }
                at = w.place_in_slot(at);
                for part in &w.parts {
                    let start =
                        part.slot_offset.load(std::sync::atomic::Ordering::Relaxed) as usize;
                    part_bytes.resize(part.bytes as usize, 0);
                    weights::repack(w.format, w.part_source(part), &mut part_bytes);
                    view.slice(start..start + part_bytes.len())
                        .copy_from_slice(&part_bytes);
                }
            }
        }
        buffer.unmap();
        Ok(StagedGroup {
            group,
            staging: Some(Arc::new(RawBuffer::new(buffer, size, &self.staging_ledger))),
            bytes: size,
        })
    }

    pub(super) fn commit(&self, group: usize, staged: StagedGroup) -> Result<(), BackendError> {
        if staged.group != group {
            return Err(param(
                "commit_group",
                format!("group {} was staged, not {group}", staged.group),
            )
            .into());
        }
        let mut slots = lock(&self.slots);
        let index = slots.victim().ok_or_else(|| {
            BackendError::Device("no expert-group slot is reserved on the device".into())
        })?;
        let slot = &slots.slots[index];
        if staged.bytes > slot.raw.bytes {
            return Err(BackendError::TooLarge {
                what: format!("expert group {group}"),
                bytes: staged.bytes,
                limit: slot.raw.bytes,
                limit_name: "group slot",
            });
        }
        let raw = slot.raw.clone();
        slots.occupy(index, group);
        drop(slots);
        if let Some(staging) = &staged.staging {
            // In the command stream: after the work that used the slot's previous group, before
            // the work that uses this one.
            self.record_copy(
                Bind::whole(staging),
                Bind {
                    raw: &raw,
                    offset: 0,
                    size: staged.bytes,
                },
            )?;
        }
        Ok(())
    }
}
