//! The `-t/--threads` rule shared by every command: at least one, at most a few per core (more
//! only adds switching, and a typo such as 100000 would start that many threads), and the
//! worker pool sized once before any work.

use anyhow::{bail, Context, Result};

/// Threads per core allowed beyond the machine's count (hyper-threads, oversubscribed tests).
const PER_CORE: usize = 4;

/// The cores the process may use (its affinity mask or cgroup quota, as the standard library
/// sees them).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks a `--threads` value against the machine.
pub fn check(threads: usize) -> Result<usize> {
    let cores = available_cores();
    if threads == 0 {
        bail!("--threads must be at least 1 (this machine has {cores} cores)");
    }
    if threads > PER_CORE * cores {
        bail!(
            "--threads {threads} is more than {PER_CORE} per core: this machine has {cores} cores \
             (at most {} threads)",
            PER_CORE * cores
        );
    }
    Ok(threads)
}

/// Sizes the global worker pool (`None`: one thread per core).
pub fn configure(threads: Option<usize>) -> Result<()> {
    let Some(threads) = threads else {
        return Ok(());
    };
    let threads = check(threads)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("cannot start the worker threads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_absurd_counts_are_refused_naming_the_machine() {
        let cores = available_cores();
        let zero = check(0).unwrap_err().to_string();
        assert!(zero.contains(&format!("{cores} cores")), "{zero}");
        let many = check(100_000).unwrap_err().to_string();
        assert!(many.contains(&format!("{cores} cores")), "{many}");
        assert_eq!(check(1).unwrap(), 1);
        assert_eq!(check(PER_CORE * cores).unwrap(), PER_CORE * cores);
    }
}
