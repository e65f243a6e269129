//! Expert-group slots: a few device buffers, each big enough for the largest group, that the
//! groups take turns in. Sampling commits the next group to the slot the active one is not in
//! while the active one still runs, so an image needs one upload per group after the first and no
//! more than two groups' bytes are ever on the device.
//!
//! This module owns the slot bookkeeping (which group is where, which slot is free); uploads go
//! through the backend.

use std::sync::Arc;

use super::buffer::RawBuffer;

/// One slot and the group it holds.
pub struct Slot {
    pub raw: Arc<RawBuffer>,
    pub group: Option<usize>,
    /// When the slot was last committed to (larger is newer).
    pub stamp: u64,
}

#[derive(Default)]
pub struct Slots {
    pub slots: Vec<Slot>,
    clock: u64,
}

impl Slots {
    /// The slot holding `group`.
    pub fn find(&self, group: usize) -> Option<&Slot> {
        self.slots.iter().find(|s| s.group == Some(group))
    }

    /// The slot a new group should go to: a free one, else the least recently committed (never
    /// the most recent one while another exists).
    pub fn victim(&self) -> Option<usize> {
        if let Some(i) = self.slots.iter().position(|s| s.group.is_none()) {
            return Some(i);
        }
        (0..self.slots.len()).min_by_key(|&i| self.slots[i].stamp)
    }

    pub fn occupy(&mut self, index: usize, group: usize) {
        self.clock += 1;
        for s in &mut self.slots {
            if s.group == Some(group) {
                s.group = None;
            }
        }
        let slot = &mut self.slots[index];
        slot.group = Some(group);
        slot.stamp = self.clock;
    }

    pub fn release(&mut self, group: usize) {
        for s in &mut self.slots {
            if s.group == Some(group) {
                s.group = None;
                s.stamp = 0;
            }
        }
    }
}
