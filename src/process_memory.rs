//! What this process holds in RAM: resident set size now and at its peak, a way to reset the peak
//! between phases, and a background sampler that records RSS over time (for benchmarks and the
//! per-phase summary of `latte generate`). Linux reads `/proc/self/status`; elsewhere every
//! function returns `None`, so callers print "n/a" instead of a wrong number.
//!
//! This module owns reading the numbers; it must not decide what to do about them (residency does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One line of `/proc/self/status` such as `VmRSS:   123456 kB`, in bytes.
fn status_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_field(&status, field)
}

fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|line| line.split(':').next() == Some(field))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// Resident set size now, in bytes.
pub fn current_rss() -> Option<u64> {
    status_field("VmRSS")
}

/// Peak resident set size since the process started or since the last [`reset_peak_rss`].
pub fn peak_rss() -> Option<u64> {
    status_field("VmHWM")
}

/// Resets the peak RSS to the current RSS (Linux ≥ 4.0: writing 5 to `/proc/self/clear_refs`).
/// Returns false where that is not possible; the peak then stays cumulative.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `MemAvailable` of the machine (`/proc/meminfo`), in bytes: the residency policy releases
/// finished expert groups when a model file is larger than this.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_status_field(&info, "MemAvailable")
}

/// One RSS sample: seconds since the sampler started, and bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RssSample {
    pub seconds: f64,
    pub bytes: u64,
}

/// Samples RSS on a background thread every `interval` until [`RssSampler::finish`].
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<RssSample>>,
}

impl RssSampler {
    pub fn start(interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            loop {
                if let Some(bytes) = current_rss() {
                    samples.push(RssSample {
                        seconds: start.elapsed().as_secs_f64(),
                        bytes,
                    });
                }
                if flag.load(Ordering::Relaxed) {
                    return samples;
                }
                std::thread::sleep(interval);
            }
        });
        RssSampler { stop, handle }
    }

    /// Stops the thread and returns its samples (empty where RSS cannot be read).
    pub fn finish(self) -> Vec<RssSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tlatte\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t3\n";
        assert_eq!(parse_status_field(status, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_field(status, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_status_field(status, "Threads"), Some(3));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
        assert_eq!(parse_status_field("VmRSS: lots kB", "VmRSS"), None);
        assert_eq!(parse_status_field("VmRSS: 1 MB", "VmRSS"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rss_grows_when_pages_are_touched() {
        // RSS is the whole test process's: other tests running beside this one free memory at
        // the same time (tens of MiB seen), so the block is large and the bar half of it.
        let before = current_rss().unwrap();
        let block = vec![1u8; 256 << 20];
        let during = current_rss().unwrap();
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        assert!(during >= before + (128 << 20), "{before} -> {during}");
        assert!(peak_rss().unwrap() >= during);
    }
}
