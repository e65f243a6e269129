//! The device side of expert-group residency: how many group slots a device-memory budget allows,
//! and, as sampling moves from group to group, staging the next group on a host thread while the
//! device computes the current one, committing it to the free slot when the current group's last
//! step is done, and releasing finished groups. With one slot (a tight budget) the switch is
//! synchronous; dense sampling keeps every group resident.
//!
//! On backends that compute from the mapped file (the CPU) every group costs 0 device bytes and
//! all of this is a no-op. This module owns the policy; the backend owns the slots.

use std::thread::{Scope, ScopedJoinHandle};

use crate::backend::{Backend, BackendError};
use crate::model::flow::Replica;

/// How many slots sampling uses, and their size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPlan {
    pub slots: usize,
    pub slot_bytes: u64,
}

/// Why a plan cannot run within a device-memory budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetError {
    pub what: String,
    pub needed: u64,
    pub available: u64,
}

impl std::fmt::Display for BudgetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::residency::format_size;
        write!(
            f,
            "{} needs {} of device memory ({} bytes); the device budget is {} ({} bytes)",
            self.what,
            format_size(self.needed),
            self.needed,
            format_size(self.available),
            self.available
        )
    }
}

/// The slots for sampling: all groups when `dense`, else two (the active group and the next) when
/// they fit `budget` next to `fixed` bytes, else one; an error when not even one group fits.
pub fn plan_slots(
    group_count: usize,
    slot_bytes: u64,
    fixed: u64,
    budget: Option<u64>,
    dense: bool,
) -> Result<SlotPlan, BudgetError> {
    if slot_bytes == 0 {
        return Ok(SlotPlan {
            slots: 0,
            slot_bytes: 0,
        });
    }
    let wanted = if dense {
        group_count
    } else {
        group_count.min(2)
    };
    let Some(budget) = budget else {
        return Ok(SlotPlan {
            slots: wanted,
            slot_bytes,
        });
    };
    let available = budget.saturating_sub(fixed);
    let fit = (available / slot_bytes) as usize;
    let minimum = if dense { group_count } else { 1 };
    if fit < minimum {
        return Err(BudgetError {
            what: if dense {
                format!("dense sampling (all {group_count} expert groups)")
            } else {
                "one expert group".into()
            },
            needed: fixed + minimum as u64 * slot_bytes,
            available: budget,
        });
    }
    Ok(SlotPlan {
        slots: wanted.min(fit),
        slot_bytes,
    })
}

/// A host thread staging one group.
type Staging<'s, B> = ScopedJoinHandle<'s, Result<<B as Backend>::StagedGroup, BackendError>>;

/// Moves groups through the slots while sampling runs (see the module docs).
pub struct DeviceGroups<'s, 'env, 'f, B: Backend> {
    replica: &'env Replica<'f, B>,
    scope: &'s Scope<'s, 'env>,
    plan: SlotPlan,
    /// A group being staged on a host thread.
    staging: Option<(usize, Staging<'s, B>)>,
    /// Device uploads so far (the summary reports them: K − 1 per layerwise image with two slots,
    /// plus the first).
    pub uploads: usize,
}

impl<'s, 'env, 'f, B: Backend> DeviceGroups<'s, 'env, 'f, B> {
    pub fn new(scope: &'s Scope<'s, 'env>, replica: &'env Replica<'f, B>, plan: SlotPlan) -> Self {
        DeviceGroups {
            replica,
            scope,
            plan,
            staging: None,
            uploads: 0,
        }
    }

    fn active(&self) -> bool {
        self.plan.slots > 0
    }

    /// Makes `group` resident now (synchronously if it is not already staged or resident).
    pub fn ensure(&mut self, group: usize) -> Result<(), BackendError> {
        let backend = self.replica.backend();
        if !self.active() || backend.group_resident(group) {
            return Ok(());
        }
        let staged = match self.staging.take() {
            Some((g, handle)) if g == group => join(handle)?,
            other => {
                // A staged group that is not the one needed: drop it.
                if let Some((_, handle)) = other {
                    join(handle)?;
                }
                backend.stage_group(group, &self.replica.group_weights(group))?
            }
        };
        backend.commit_group(group, staged)?;
        self.uploads += 1;
        Ok(())
    }

    /// Starts staging `group` on a host thread, when a slot will be free for it (nothing when
    /// `group` is past the last one, or already resident or staging).
    pub fn prefetch(&mut self, group: usize) {
        if group >= self.replica.config().group_count {
            return;
        }
        if !self.active() || self.plan.slots < 2 || self.staging.is_some() {
            return;
        }
        if self.replica.backend().group_resident(group) {
            return;
        }
        let replica = self.replica;
        let handle = self.scope.spawn(move || {
            replica
                .backend()
                .stage_group(group, &replica.group_weights(group))
        });
        self.staging = Some((group, handle));
    }

    /// Sampling has left `group` for good.
    pub fn finish(&mut self, group: usize) {
        if self.active() {
            self.replica.backend().release_group(group);
        }
    }

    /// Every group resident at once (dense sampling).
    pub fn ensure_all(&mut self) -> Result<(), BackendError> {
        for group in 0..self.replica.config().group_count {
            self.ensure(group)?;
        }
        Ok(())
    }

    /// Waits for a staging thread still running (nothing may outlive sampling).
    pub fn close(&mut self) -> Result<(), BackendError> {
        if let Some((_, handle)) = self.staging.take() {
            join(handle)?;
        }
        Ok(())
    }
}

fn join<T>(handle: ScopedJoinHandle<'_, Result<T, BackendError>>) -> Result<T, BackendError> {
    handle
        .join()
        .map_err(|_| BackendError::Device("the group staging thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_decides_the_slots() {
        let two = plan_slots(4, 100, 50, Some(260), false).unwrap();
        assert_eq!(two.slots, 2);
        let one = plan_slots(4, 100, 50, Some(200), false).unwrap();
        assert_eq!(one.slots, 1);
        let none = plan_slots(4, 100, 50, Some(120), false).unwrap_err();
        assert_eq!((none.needed, none.available), (150, 120));
        assert_eq!(plan_slots(4, 100, 50, None, false).unwrap().slots, 2);
        assert_eq!(plan_slots(4, 100, 50, None, true).unwrap().slots, 4);
        assert!(plan_slots(4, 100, 50, Some(400), true).is_err());
        assert_eq!(plan_slots(4, 0, 50, Some(1), false).unwrap().slots, 0);
    }
}
