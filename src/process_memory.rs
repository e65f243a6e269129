//! This process's resident memory, for the generation summary: current RSS and its peak
//! (`/proc/self/status` VmRSS / VmHWM), with the peak reset between phases (`/proc/self/clear_refs`)
//! so each phase reports its own peak. Linux only; elsewhere every query answers `None`.
//!
//! This module owns reading those numbers; it must not decide what to release.

/// Resident set size now and its peak since the last [`reset_peak`], in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessMemory {
    pub resident: u64,
    pub peak: u64,
}

/// The current numbers, or `None` where `/proc/self/status` is not available.
pub fn current() -> Option<ProcessMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    Some(ProcessMemory {
        resident: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Starts a new peak (writing 5 to `/proc/self/clear_refs` resets VmHWM to the current RSS).
/// Returns whether it worked.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `MemAvailable` of the machine in bytes, if known.
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line["MemAvailable:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        if let Some(m) = super::current() {
            assert!(m.resident > 0 && m.peak >= m.resident / 2);
        }
    }
}
