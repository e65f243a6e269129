//! `--device auto|cpu|wgpu[:N]`: which backend a run asks for, parsed once for every command.
//! Opening it is the caller's (the CLI falls back from `auto` to the CPU with a notice).

use std::fmt;
use std::str::FromStr;

/// The backend a run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU if there is one (never a software rasteriser), else the CPU.
    #[default]
    Auto,
    Cpu,
    /// wgpu: adapter `N` of `latte devices`, or the best one (hardware first).
    Wgpu(Option<usize>),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "wgpu" | "gpu" => Ok(DeviceChoice::Wgpu(None)),
            other => match other.strip_prefix("wgpu:") {
                Some(n) => n
                    .parse()
                    .map(|n| DeviceChoice::Wgpu(Some(n)))
                    .map_err(|_| format!("'{s}': the adapter index must be a number (wgpu:0)")),
                None => Err(format!(
                    "'{s}' is not a device: use auto, cpu, wgpu or wgpu:N (see `latte devices`)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Wgpu(None) => write!(f, "wgpu"),
            DeviceChoice::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("CPU".parse(), Ok(DeviceChoice::Cpu));
        assert_eq!("wgpu".parse(), Ok(DeviceChoice::Wgpu(None)));
        assert_eq!("wgpu:2".parse(), Ok(DeviceChoice::Wgpu(Some(2))));
        assert!("wgpu:x".parse::<DeviceChoice>().is_err());
        assert!("cuda".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Wgpu(Some(1)).to_string(), "wgpu:1");
    }
}
