//! Peer results measured by scripts in the same benchmark run (tools/bench/pytorch_peer.py), read
//! from their JSON and attached to our rows with the same test name and thread count.
//!
//! The JSON: `{"peer": NAME, "threads": N, "rows": [{"test": "img", "unit": "s", "mean": ..,
//! "std_dev": .., "median": .., "min": .., "max": .., "reps": ..}, ...]}`. This module owns reading
//! and matching; it must not measure.

use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use super::report::{Measurement, PeerMeasurement, Unit};
use super::stats::Summary;

#[derive(Debug, Error)]
pub enum PeerFileError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path}: malformed JSON: {cause}")]
    Json {
        path: String,
        cause: serde_json::Error,
    },
    #[error("{path}: field '{field}' {problem}")]
    Field {
        path: String,
        field: String,
        problem: &'static str,
    },
}

/// One peer row: which of our tests and thread counts it matches.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    pub test: String,
    pub threads: usize,
    pub unit: Unit,
    pub measurement: PeerMeasurement,
}

/// Reads a peer's JSON file.
pub fn read_peer_file(path: &Path) -> Result<Vec<PeerRow>, PeerFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PeerFileError::Io {
        path: name.clone(),
        cause: source,
    })?;
    parse_peer_json(&name, &text)
}

/// Parses a peer's JSON (`path` only labels errors).
pub fn parse_peer_json(path: &str, text: &str) -> Result<Vec<PeerRow>, PeerFileError> {
    let root: Value = serde_json::from_str(text).map_err(|source| PeerFileError::Json {
        path: path.into(),
        cause: source,
    })?;
    let bad = |field: &str, problem: &'static str| PeerFileError::Field {
        path: path.into(),
        field: field.into(),
        problem,
    };
    let peer = root
        .get("peer")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("peer", "must be a string"))?;
    let threads = root
        .get("threads")
        .and_then(Value::as_u64)
        .filter(|&t| t > 0)
        .ok_or_else(|| bad("threads", "must be a positive integer"))? as usize;
    let rows = root
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("rows", "must be an array"))?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let field = |key: &str| format!("rows[{i}].{key}");
            let number = |key: &str| {
                row.get(key)
                    .and_then(Value::as_f64)
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(&field(key), "must be a finite number"))
            };
            let test = row
                .get("test")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&field("test"), "must be a string"))?;
            let unit = match row.get("unit").and_then(Value::as_str) {
                Some("s") => Unit::Seconds,
                Some("t/s") => Unit::TokensPerSecond,
                _ => return Err(bad(&field("unit"), "must be \"s\" or \"t/s\"")),
            };
            let reps = row
                .get("reps")
                .and_then(Value::as_u64)
                .filter(|&r| r > 0)
                .ok_or_else(|| bad(&field("reps"), "must be a positive integer"))?;
            Ok(PeerRow {
                test: test.into(),
                threads,
                unit,
                measurement: PeerMeasurement {
                    name: peer.into(),
                    summary: Summary {
                        n: reps as usize,
                        mean: number("mean")?,
                        std_dev: number("std_dev")?,
                        median: number("median")?,
                        min: number("min")?,
                        max: number("max")?,
                    },
                },
            })
        })
        .collect()
}

/// Attaches every peer row to our row of the same test, thread count and unit. Returns the peer
/// rows that matched nothing (so the caller can say so).
pub fn attach(rows: &mut [Measurement], peers: Vec<PeerRow>) -> Vec<PeerRow> {
    let mut unmatched = Vec::new();
    for peer in peers {
        match rows
            .iter_mut()
            .find(|r| r.test == peer.test && r.threads == peer.threads && r.unit == peer.unit)
        {
            Some(row) => row.peers.push(peer.measurement),
            None => unmatched.push(peer),
        }
    }
    unmatched
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"peer": "pytorch-f32", "threads": 2, "rows": [
        {"test": "img", "unit": "s", "mean": 4.0, "std_dev": 0.1, "median": 4.0, "min": 3.9, "max": 4.1, "reps": 3},
        {"test": "vae", "unit": "s", "mean": 8.0, "std_dev": 0.0, "median": 8.0, "min": 8.0, "max": 8.0, "reps": 1}]}"#;

    #[test]
    fn parses_and_attaches_by_test_and_threads() {
        let peers = parse_peer_json("p.json", GOOD).unwrap();
        assert_eq!(peers.len(), 2);
        let ours = |test: &str, threads| Measurement {
            test: test.into(),
            threads,
            unit: Unit::Seconds,
            summary: Summary::of(&[2.0]).unwrap(),
            peak_rss_bytes: None,
            device_peak_bytes: None,
            peers: Vec::new(),
        };
        let mut rows = vec![ours("img", 2), ours("img", 1)];
        let unmatched = attach(&mut rows, peers);
        assert_eq!(rows[0].peers.len(), 1);
        assert_eq!(rows[0].speedup(&rows[0].peers[0]), Some(2.0));
        assert!(rows[1].peers.is_empty());
        assert_eq!(unmatched.len(), 1);
        assert_eq!(unmatched[0].test, "vae");
    }

    #[test]
    fn bad_files_name_the_field() {
        for (text, field) in [
            ("{", "malformed"),
            (r#"{"threads": 2, "rows": []}"#, "'peer'"),
            (r#"{"peer": "x", "threads": 0, "rows": []}"#, "'threads'"),
            (r#"{"peer": "x", "threads": 1}"#, "'rows'"),
            (
                r#"{"peer": "x", "threads": 1, "rows": [{"test": "img", "unit": "ms"}]}"#,
                "rows[0].unit",
            ),
            (
                r#"{"peer": "x", "threads": 1, "rows": [{"test": "img", "unit": "s", "reps": 1, "mean": "fast"}]}"#,
                "rows[0].mean",
            ),
        ] {
            let err = parse_peer_json("p.json", text).unwrap_err().to_string();
            assert!(err.contains("p.json") && err.contains(field), "{err}");
        }
    }
}
