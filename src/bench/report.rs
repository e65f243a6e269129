//! The benchmark report and its three renderings, as llama-bench has them: a markdown table with the
//! machine, build and model in a header; CSV and JSON with the same facts as fields on every row.
//!
//! This module owns formatting only; it must not measure anything.

use std::fmt::Write as _;

use serde_json::json;

use super::machine::{Build, Machine};
use super::stats::Summary;

/// What a number means, which also decides which direction is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Higher is better.
    TokensPerSecond,
    /// Lower is better.
    Seconds,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::TokensPerSecond => "t/s",
            Unit::Seconds => "s",
        }
    }
}

/// The same test run by another engine in the same process run.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerMeasurement {
    pub name: String,
    pub summary: Summary,
}

/// One row: a test at one thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// `pp512`, `tg128`, `img`, `img g2 step`, `vae`, `load`, ...
    pub test: String,
    pub threads: usize,
    pub unit: Unit,
    pub summary: Summary,
    /// Peak resident memory during the measured phase.
    pub peak_rss_bytes: Option<u64>,
    /// Peak device memory during the measured phase (GPU backends).
    pub device_peak_bytes: Option<u64>,
    /// The same test run by other engines (llama.cpp, PyTorch, ...).
    pub peers: Vec<PeerMeasurement>,
}

impl Measurement {
    /// How many times faster we are than `peer` (> 1: faster), from the means.
    pub fn speedup(&self, peer: &PeerMeasurement) -> Option<f64> {
        let ratio = match self.unit {
            Unit::TokensPerSecond => self.summary.mean / peer.summary.mean,
            Unit::Seconds => peer.summary.mean / self.summary.mean,
        };
        ratio.is_finite().then_some(ratio)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelDescription {
    pub path: String,
    pub size_bytes: u64,
    pub parameters: u64,
    /// e.g. "Q4_0 (F32 norms)": the types the file's weights use.
    pub types: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub machine: Machine,
    pub build: Build,
    pub model: ModelDescription,
    /// The backend the rows ran on (`cpu (avx2, 2 threads)`, `wgpu: NAME (Vulkan, discrete)`).
    pub device: String,
    pub rows: Vec<Measurement>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn value_cell(unit: Unit, s: &Summary) -> String {
    match unit {
        Unit::TokensPerSecond => format!("{:.2} ± {:.2}", s.mean, s.std_dev),
        Unit::Seconds => format!("{:.4} ± {:.4}", s.mean, s.std_dev),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let b = &self.build;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "machine: {} ({} logical cores, {}, {}), {}",
            m.cpu,
            m.logical_cores,
            m.isa,
            m.memory_bytes.map_or("memory n/a".into(), |x| format!(
                "{:.1} GiB",
                mib(x) / 1024.0
            )),
            m.os
        );
        let _ = writeln!(
            out,
            "build: latte {} ({}{})",
            b.version,
            b.profile,
            b.commit
                .as_deref()
                .map_or(String::new(), |c| format!(", {c}"))
        );
        let _ = writeln!(out, "device: {}", self.device);
        let _ = writeln!(
            out,
            "model: {} ({:.2} MiB, {:.3} B params, {})\n",
            self.model.path,
            mib(self.model.size_bytes),
            self.model.parameters as f64 / 1e9,
            self.model.types
        );
        let device = self.rows.iter().any(|r| r.device_peak_bytes.is_some());
        out.push_str("| test | threads | unit | latte (mean ± sd) | samples | peak RSS (MiB) |");
        out.push_str(if device { " device peak (MiB) |" } else { "" });
        out.push_str(" peers: value (latte speedup) |\n");
        out.push_str(if device {
            "|---|--:|---|--:|--:|--:|--:|---|\n"
        } else {
            "|---|--:|---|--:|--:|--:|---|\n"
        });
        for r in &self.rows {
            let rss = r
                .peak_rss_bytes
                .map_or("n/a".into(), |x| format!("{:.1}", mib(x)));
            let rss = if device {
                let d = r
                    .device_peak_bytes
                    .map_or("n/a".into(), |x| format!("{:.1}", mib(x)));
                format!("{rss} | {d}")
            } else {
                rss
            };
            let peers: Vec<String> = r
                .peers
                .iter()
                .map(|p| {
                    let speedup = r.speedup(p).map_or("n/a".into(), |x| format!("{x:.2}×"));
                    format!("{} {} ({speedup})", p.name, value_cell(r.unit, &p.summary))
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.test,
                r.threads,
                r.unit.label(),
                value_cell(r.unit, &r.summary),
                r.summary.n,
                rss,
                peers.join("; ")
            );
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from(
            "cpu,cores,isa,device,build,profile,model,model_bytes,model_params,model_types,test,threads,\
             unit,mean,std_dev,median,min,max,samples,peak_rss_bytes,device_peak_bytes,peer,peer_mean,\
             peer_std_dev,speedup\n",
        );
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let no_peer = [None];
        for (r, peer) in self.rows.iter().flat_map(|r| {
            let peers: Vec<Option<&PeerMeasurement>> = if r.peers.is_empty() {
                no_peer.to_vec()
            } else {
                r.peers.iter().map(Some).collect()
            };
            peers.into_iter().map(move |p| (r, p))
        }) {
            let opt = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                quote(&self.machine.cpu),
                self.machine.logical_cores,
                self.machine.isa,
                quote(&self.device),
                quote(&self.build.version),
                self.build.profile,
                quote(&self.model.path),
                self.model.size_bytes,
                self.model.parameters,
                quote(&self.model.types),
                quote(&r.test),
                r.threads,
                r.unit.label(),
                r.summary.mean,
                r.summary.std_dev,
                r.summary.median,
                r.summary.min,
                r.summary.max,
                r.summary.n,
                r.peak_rss_bytes.map_or(String::new(), |x| x.to_string()),
                r.device_peak_bytes.map_or(String::new(), |x| x.to_string()),
                peer.map_or(String::new(), |p| quote(&p.name)),
                opt(peer.map(|p| p.summary.mean)),
                opt(peer.map(|p| p.summary.std_dev)),
                opt(peer.and_then(|p| r.speedup(p))),
            );
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let summary = |s: &Summary| {
            json!({"mean": s.mean, "std_dev": s.std_dev, "median": s.median, "min": s.min,
                   "max": s.max, "samples": s.n})
        };
        json!({
            "machine": {
                "cpu": self.machine.cpu, "logical_cores": self.machine.logical_cores,
                "isa": self.machine.isa, "memory_bytes": self.machine.memory_bytes, "os": self.machine.os,
            },
            "build": {"version": self.build.version, "profile": self.build.profile, "commit": self.build.commit},
            "device": self.device,
            "model": {
                "path": self.model.path, "size_bytes": self.model.size_bytes,
                "parameters": self.model.parameters, "types": self.model.types,
            },
            "results": self.rows.iter().map(|r| json!({
                "test": r.test, "threads": r.threads, "unit": r.unit.label(),
                "value": summary(&r.summary), "peak_rss_bytes": r.peak_rss_bytes,
                "device_peak_bytes": r.device_peak_bytes,
                "peers": r.peers.iter().map(|p| json!({
                    "name": p.name, "value": summary(&p.summary), "speedup": r.speedup(p),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let s = |x: &[f64]| Summary::of(x).unwrap();
        Report {
            machine: Machine {
                cpu: "Test CPU, \"quoted\"".into(),
                logical_cores: 2,
                isa: "avx2".into(),
                memory_bytes: Some(8 << 30),
                os: "linux-x86_64".into(),
            },
            build: Build {
                version: "0.1.0".into(),
                profile: "release".into(),
                commit: None,
            },
            model: ModelDescription {
                path: "m.gguf".into(),
                size_bytes: 3 << 20,
                parameters: 1_500_000_000,
                types: "Q4_0".into(),
            },
            device: "cpu (avx2, 2 threads)".into(),
            rows: vec![
                Measurement {
                    test: "tg128".into(),
                    threads: 2,
                    unit: Unit::TokensPerSecond,
                    summary: s(&[10.0, 12.0]),
                    peak_rss_bytes: Some(100 << 20),
                    device_peak_bytes: None,
                    peers: vec![PeerMeasurement {
                        name: "llama.cpp".into(),
                        summary: s(&[8.0, 8.0]),
                    }],
                },
                Measurement {
                    test: "img".into(),
                    threads: 2,
                    unit: Unit::Seconds,
                    summary: s(&[2.0]),
                    peak_rss_bytes: None,
                    device_peak_bytes: None,
                    peers: vec![
                        PeerMeasurement {
                            name: "pytorch-f32".into(),
                            summary: s(&[5.0]),
                        },
                        PeerMeasurement {
                            name: "pytorch-bf16".into(),
                            summary: s(&[4.0]),
                        },
                    ],
                },
            ],
        }
    }

    #[test]
    fn speedup_direction_follows_the_unit() {
        let r = report();
        assert_eq!(r.rows[0].speedup(&r.rows[0].peers[0]), Some(11.0 / 8.0));
        assert_eq!(r.rows[1].speedup(&r.rows[1].peers[0]), Some(2.5));
    }

    #[test]
    fn renderings_carry_every_row() {
        let r = report();
        let md = r.markdown();
        assert!(md.contains(
            "| tg128 | 2 | t/s | 11.00 ± 1.41 | 2 | 100.0 | llama.cpp 8.00 ± 0.00 (1.38×) |"
        ));
        assert!(md.contains(
            "| img | 2 | s | 2.0000 ± 0.0000 | 1 | n/a | pytorch-f32 5.0000 ± 0.0000 (2.50×); \
             pytorch-bf16 4.0000 ± 0.0000 (2.00×) |"
        ));
        let csv = r.csv();
        // Header, tg128 with llama.cpp, img once per PyTorch peer.
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.contains("\"Test CPU, \"\"quoted\"\"\""));
        let json = r.json();
        assert_eq!(json["results"][1]["peers"][0]["speedup"], 2.5);
        assert_eq!(json["results"][0]["peers"][0]["name"], "llama.cpp");
    }
}
