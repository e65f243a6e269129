//! The facts a benchmark table is meaningless without: the CPU, its cores and detected instruction
//! set, the memory, the OS, and how latte was built.

use crate::backend::cpu::isa::Isa;

#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub logical_cores: usize,
    pub isa: String,
    pub memory_bytes: Option<u64>,
    pub os: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    pub version: String,
    /// "release" or "debug" (numbers from a debug build are not worth publishing).
    pub profile: String,
    /// The commit, when the builder exported `LATTE_BUILD_COMMIT`.
    pub commit: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            isa: Isa::detect().to_string(),
            memory_bytes: mem_total(&meminfo),
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

impl Build {
    pub fn this() -> Build {
        Build {
            version: env!("CARGO_PKG_VERSION").to_string(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_string(),
            commit: option_env!("LATTE_BUILD_COMMIT").map(str::to_string),
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t: fpu\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 9B14"));
        assert_eq!(cpu_model("processor: 0\n"), None);
        assert_eq!(
            mem_total("MemTotal:       24000000 kB\nMemFree: 1 kB\n"),
            Some(24_000_000 * 1024)
        );
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        let machine = Machine::detect();
        assert!(machine.logical_cores >= 1 && !machine.isa.is_empty());
    }
}
