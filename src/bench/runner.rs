//! Runs the tests `latte bench` asks for, at each thread count, through the same library calls a
//! user makes (text decoder, `Generator`, DC-AE `Decoder`), after one warm-up run each, and turns
//! the timings into report rows. Peers measured in the same run attach to the rows they match.
//!
//! This module owns the measuring loop; formats are `report`'s, statistics `stats`'.

use std::path::Path;
use std::time::Instant;

use thiserror::Error;

use crate::backend::Backend;
use crate::model::dcae::{Decoder, DecoderScratch};
use crate::model::flow::FlowConfig;
use crate::model::text::{TextConfig, TextModel};
use crate::model::{ModelError, ModelFile};
use crate::output::TemporaryPath;
use crate::pipeline::describe::{DescribeError, Describer};
use crate::pipeline::generate::{GenerateError, GenerateOptions, Generated, Generator, Progress};
use crate::pipeline::sampler::{SamplerKind, StepInfo};
use crate::process_memory::{self, RssSample, RssSampler};
use crate::residency::ReleasePolicy;
use crate::tokenizer::{Tokenizer, TokenizerError};

use super::bench_test::BenchTest;
use super::report::{Measurement, PeerMeasurement, Unit};
use super::stats::Summary;
use super::text::{benchmark_tokens, TextBench};

#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Describe(#[from] Box<DescribeError>),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{file}: test '{test}' needs {what}, which the file does not have")]
    Unsupported {
        file: String,
        test: String,
        what: &'static str,
    },
    #[error("thread pool of {threads} threads: {reason}")]
    Threads { threads: usize, reason: String },
    #[error("peer: {0}")]
    Peer(String),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub tests: Vec<BenchTest>,
    pub threads: Vec<usize>,
    pub repetitions: usize,
    /// Sampling steps of the image tests (the file's default when `None`).
    pub steps: Option<usize>,
    /// The image tests' prompt.
    pub prompt: String,
    pub policy: ReleasePolicy,
    /// Also run llama.cpp on the text tests (feature `ggml-peer`).
    pub llama_cpp: bool,
    /// Record RSS over time during the first measured image of each image test.
    pub trace_memory: bool,
    /// The model's path, so the `load` test times opening the file too (not for in-memory files).
    pub model_path: Option<std::path::PathBuf>,
    /// Device memory the image tests may use (`--vram-budget`).
    pub device_budget: Option<u64>,
}

/// The course of one generation, for plots: each step's group and seconds, and RSS over time.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTrace {
    pub test: String,
    pub threads: usize,
    pub steps: Vec<(usize, f64)>,
    pub rss: Vec<RssSample>,
}

/// Everything one `latte bench` run measured.
#[derive(Debug, Default)]
pub struct BenchResults {
    pub rows: Vec<Measurement>,
    pub traces: Vec<ImageTrace>,
}

/// Runs every test of `options` on `file` with `backend`; `on_row` hears of each row as it is
/// measured.
pub fn run<B: Backend>(
    backend: &B,
    file: &ModelFile,
    options: &BenchOptions,
    on_row: &mut dyn FnMut(&Measurement),
) -> Result<BenchResults, BenchError> {
    if options.llama_cpp && !cfg!(feature = "ggml-peer") {
        return Err(BenchError::Peer(
            "llama.cpp is a peer only in builds with `--features ggml-peer`".into(),
        ));
    }
    check_text_lengths(file, &options.tests)?;
    let mut results = BenchResults::default();
    let mut peer_file = PeerTextFile::default();
    for &threads in &options.threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| BenchError::Threads {
                threads,
                reason: e.to_string(),
            })?;
        for &test in &options.tests {
            let start = results.rows.len();
            pool.install(|| {
                run_test(
                    backend,
                    file,
                    options,
                    test,
                    threads,
                    &mut peer_file,
                    &mut results,
                )
            })?;
            results.rows[start..].iter().for_each(&mut *on_row);
        }
    }
    Ok(results)
}

/// Every ppN / tgN must fit the model's context: refused before any test runs, not after the
/// others have.
fn check_text_lengths(file: &ModelFile, tests: &[BenchTest]) -> Result<(), BenchError> {
    let longest = tests
        .iter()
        .filter_map(|test| match test {
            BenchTest::Prompt(n) | BenchTest::Generate(n) => Some(*n),
            _ => None,
        })
        .max();
    let Some(longest) = longest else {
        return Ok(());
    };
    let capacity = crate::model::text::TextConfig::from_file(file)?.context_length;
    if longest > capacity {
        return Err(ModelError::ContextFull {
            needed: longest,
            used: 0,
            capacity,
        }
        .into());
    }
    Ok(())
}

fn run_test<B: Backend>(
    backend: &B,
    file: &ModelFile,
    options: &BenchOptions,
    test: BenchTest,
    threads: usize,
    peer_file: &mut PeerTextFile,
    results: &mut BenchResults,
) -> Result<(), BenchError> {
    let reps = options.repetitions.max(1);
    let row = |name: String, unit: Unit, summary: Summary, rss: Option<u64>| Measurement {
        test: name,
        threads,
        unit,
        summary,
        peak_rss_bytes: rss,
        device_peak_bytes: backend.device_memory().map(|m| m.peak),
        peers: Vec::new(),
    };
    match test {
        BenchTest::Prompt(n) | BenchTest::Generate(n) => {
            let model = TextModel::load_on(backend, file)?;
            let mut bench = TextBench::new(&model, n)?;
            let tokens = benchmark_tokens(n, model.config().vocab);
            let measure = |bench: &mut TextBench<B>| match test {
                BenchTest::Prompt(_) => bench.prompt_seconds(&tokens),
                _ => bench.generate_seconds(&tokens),
            };
            measure(&mut bench)?;
            process_memory::reset_peak_rss();
            backend.reset_peak_memory();
            let seconds = (0..reps)
                .map(|_| measure(&mut bench))
                .collect::<Result<Vec<_>, _>>()?;
            let mut measurement = row(
                test.to_string(),
                Unit::TokensPerSecond,
                rates(n, &seconds),
                process_memory::peak_rss(),
            );
            if options.llama_cpp {
                measurement.peers.push(llama_cpp_peer(
                    peer_file.path(file)?,
                    test,
                    &tokens,
                    threads,
                    reps,
                )?);
            }
            results.rows.push(measurement);
        }
        BenchTest::Image | BenchTest::ImageDense => {
            image_rows(backend, file, options, test, threads, results)?;
        }
        BenchTest::Vae => {
            if !FlowConfig::present(file) {
                return Err(unsupported(file, test, "a DC-AE decoder"));
            }
            let config = FlowConfig::from_file(file)?;
            let decoder = Decoder::load_on(backend, file)?;
            let mut latent = vec![0.0; config.latent_len()];
            crate::rng::fill_normal(0, &mut latent);
            let mut scratch = DecoderScratch::default();
            let size = config.latent_size;
            let mut decode = || -> Result<f64, ModelError> {
                let start = Instant::now();
                decoder.decode_flow_latent(&latent, size, size, &mut scratch)?;
                Ok(start.elapsed().as_secs_f64())
            };
            decode()?;
            process_memory::reset_peak_rss();
            backend.reset_peak_memory();
            let seconds = (0..reps).map(|_| decode()).collect::<Result<Vec<_>, _>>()?;
            results.rows.push(row(
                "vae".into(),
                Unit::Seconds,
                summary(&seconds),
                process_memory::peak_rss(),
            ));
        }
        BenchTest::Load => {
            // Opening maps and validates the header; loading reads what the models copy (norms,
            // biases) and checks every tensor's shape. Weight pages are read later, on first use.
            let load = || -> Result<f64, BenchError> {
                let start = Instant::now();
                let opened = match &options.model_path {
                    Some(path) => Some(ModelFile::open(path)?),
                    None => None,
                };
                let file = opened.as_ref().unwrap_or(file);
                if FlowConfig::present(file) {
                    Generator::load_on(backend, file, options.policy)?;
                } else {
                    Describer::load_on(backend, file).map_err(Box::new)?;
                }
                Ok(start.elapsed().as_secs_f64())
            };
            load()?;
            let seconds = (0..reps).map(|_| load()).collect::<Result<Vec<_>, _>>()?;
            results
                .rows
                .push(row("load".into(), Unit::Seconds, summary(&seconds), None));
        }
    }
    Ok(())
}

fn unsupported(file: &ModelFile, test: BenchTest, what: &'static str) -> BenchError {
    BenchError::Unsupported {
        file: file.name().into(),
        test: test.to_string(),
        what,
    }
}

fn summary(samples: &[f64]) -> Summary {
    Summary::of(samples).unwrap_or(Summary {
        n: samples.len(),
        mean: f64::NAN,
        std_dev: f64::NAN,
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

fn rates(count: usize, seconds: &[f64]) -> Summary {
    Summary::of_rates(count as f64, seconds).unwrap_or_else(|| summary(&[]))
}

/// Records each step's group and seconds.
#[derive(Default)]
struct StepLog {
    steps: Vec<(usize, f64)>,
}

impl Progress for StepLog {
    fn step(&mut self, step: &StepInfo, seconds: f64) {
        self.steps.push((step.group, seconds));
    }
}

fn image_rows<B: Backend>(
    backend: &B,
    file: &ModelFile,
    options: &BenchOptions,
    test: BenchTest,
    threads: usize,
    results: &mut BenchResults,
) -> Result<(), BenchError> {
    if !FlowConfig::present(file) {
        return Err(unsupported(file, test, "a generation pathway"));
    }
    let dense = test == BenchTest::ImageDense;
    let generator = Generator::load_on(backend, file, options.policy)?;
    let config = generator.replica().config();
    let (cond, uncond) = prompt_ids(
        file,
        &config.prompt_text(&options.prompt),
        &config.prompt_text(""),
    )?;
    let generate_options = |steps: usize, seed: u64| GenerateOptions {
        steps,
        guidance: config.guidance_scale,
        seed,
        sampler: SamplerKind::Euler,
        dense,
        device_budget: options.device_budget,
    };
    let steps = options.steps.unwrap_or(config.num_steps);
    // Warm-up: one step per group touches every tensor once.
    generator.generate(
        &cond,
        &uncond,
        &generate_options(config.group_count, 0),
        &mut StepLog::default(),
    )?;
    let mut runs: Vec<(Generated, Vec<(usize, f64)>)> = Vec::new();
    for rep in 0..options.repetitions.max(1) {
        let sampler = (rep == 0 && options.trace_memory)
            .then(|| RssSampler::start(std::time::Duration::from_millis(20)));
        let mut log = StepLog::default();
        let generated = generator.generate(
            &cond,
            &uncond,
            &generate_options(steps, rep as u64),
            &mut log,
        )?;
        if let Some(sampler) = sampler {
            results.traces.push(ImageTrace {
                test: test.to_string(),
                threads,
                steps: log.steps.clone(),
                rss: sampler.finish(),
            });
        }
        runs.push((generated, log.steps));
    }
    let name = test.to_string();
    let row = |label: String, samples: &[f64], rss: Option<u64>, device: Option<u64>| Measurement {
        test: label,
        threads,
        unit: Unit::Seconds,
        summary: summary(samples),
        peak_rss_bytes: rss,
        device_peak_bytes: device,
        peers: Vec::new(),
    };
    let phase = |generated: &Generated, phase: &str| {
        generated
            .phases
            .iter()
            .find(|p| p.name == phase)
            .map(|p| (p.seconds, p.peak_rss))
    };
    let max_rss = |phase_names: &dyn Fn(&str) -> bool| {
        runs.iter()
            .flat_map(|(g, _)| g.phases.iter())
            .filter(|p| phase_names(&p.name))
            .filter_map(|p| p.peak_rss)
            .max()
    };
    let max_device = |phase_names: &dyn Fn(&str) -> bool| {
        runs.iter()
            .flat_map(|(g, _)| g.phases.iter())
            .filter(|p| phase_names(&p.name))
            .filter_map(|p| p.device_peak)
            .max()
    };
    let totals: Vec<f64> = runs
        .iter()
        .map(|(g, _)| g.phases.iter().map(|p| p.seconds).sum())
        .collect();
    results.rows.push(row(
        name.clone(),
        &totals,
        max_rss(&|_| true),
        max_device(&|_| true),
    ));
    let prefill: Vec<f64> = runs
        .iter()
        .filter_map(|(g, _)| phase(g, "prefill").map(|p| p.0))
        .collect();
    results.rows.push(row(
        format!("{name} prefill"),
        &prefill,
        max_rss(&|p| p == "prefill"),
        max_device(&|p| p == "prefill"),
    ));
    let groups = if dense { 1 } else { config.group_count };
    for k in 0..groups {
        // A group's steps after its first (steady state), and its first minus their median: what
        // switching into the group costs (page faults, cold caches).
        let mut steady = Vec::new();
        let mut switch = Vec::new();
        for (_, steps) in &runs {
            let times: Vec<f64> = steps
                .iter()
                .filter(|(g, _)| dense || *g == k)
                .map(|&(_, s)| s)
                .collect();
            match times.split_first() {
                // One step per group: nothing to compare its first step with.
                Some((&first, [])) => steady.push(first),
                Some((&first, rest)) => {
                    steady.extend_from_slice(rest);
                    switch.push(first - summary(rest).median);
                }
                None => {}
            }
        }
        let phase_name = if dense {
            "sampling (dense)".to_string()
        } else {
            format!("group {k}")
        };
        let label = if dense {
            format!("{name} step")
        } else {
            format!("{name} g{k} step")
        };
        let rss = max_rss(&|p| p == phase_name);
        let device = max_device(&|p| p == phase_name);
        results.rows.push(row(label, &steady, rss, device));
        if !dense && !switch.is_empty() {
            results
                .rows
                .push(row(format!("{name} g{k} switch"), &switch, None, None));
        }
    }
    let decode: Vec<f64> = runs
        .iter()
        .filter_map(|(g, _)| phase(g, "decode").map(|p| p.0))
        .collect();
    results.rows.push(row(
        format!("{name} decode"),
        &decode,
        max_rss(&|p| p == "decode"),
        max_device(&|p| p == "decode"),
    ));
    Ok(())
}

/// Token ids of the conditional and unconditional prompt texts. Files without a tokenizer (the
/// synthetic benchmark models) get fixed pseudo-random ids of the lengths the chat template gives
/// a short prompt (14) and the empty one (5), as tools/bench/pytorch_peer.py assumes.
fn prompt_ids(
    file: &ModelFile,
    cond: &str,
    uncond: &str,
) -> Result<(Vec<u32>, Vec<u32>), BenchError> {
    if file.get("tokenizer.ggml.model").is_none() {
        let vocab = TextConfig::from_file(file)?.vocab;
        let ids = benchmark_tokens(19, vocab);
        return Ok((ids[..14].to_vec(), ids[14..].to_vec()));
    }
    let tokenizer = Tokenizer::from_model_file(file)?;
    Ok((
        tokenizer.encode(cond, true)?,
        tokenizer.encode(uncond, true)?,
    ))
}

/// The text model llama.cpp runs, extracted from the file once per benchmark run (it is as large
/// as the text decoder) into a registered scratch path, removed when the run ends or is interrupted.
#[derive(Default)]
struct PeerTextFile {
    scratch: Option<TemporaryPath>,
}

impl PeerTextFile {
    fn path(&mut self, file: &ModelFile) -> Result<&Path, BenchError> {
        if self.scratch.is_none() {
            let scratch = TemporaryPath::new_in(&std::env::temp_dir(), "latte-bench-text", ".gguf")
                .map_err(|e| BenchError::Peer(format!("scratch file: {e}")))?;
            crate::convert::text_only::write_text_model(file.gguf(), scratch.path())
                .map_err(|e| BenchError::Peer(e.to_string()))?;
            self.scratch = Some(scratch);
        }
        Ok(self
            .scratch
            .as_ref()
            .map_or(Path::new(""), TemporaryPath::path))
    }
}

#[cfg(feature = "ggml-peer")]
fn llama_cpp_peer(
    path: &Path,
    test: BenchTest,
    tokens: &[u32],
    threads: usize,
    reps: usize,
) -> Result<PeerMeasurement, BenchError> {
    use super::llama_cpp::LlamaCppPeer;
    let peer_error = |e: super::llama_cpp::LlamaCppError| BenchError::Peer(e.to_string());
    let mut peer =
        LlamaCppPeer::load(path, tokens.len().max(1) as u32, threads as i32).map_err(peer_error)?;
    let mut measure = || match test {
        BenchTest::Prompt(_) => peer.prompt_seconds(tokens),
        _ => peer.generate_seconds(tokens),
    };
    measure().map_err(peer_error)?;
    let seconds = (0..reps)
        .map(|_| measure().map_err(peer_error))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PeerMeasurement {
        name: "llama.cpp".into(),
        summary: rates(tokens.len(), &seconds),
    })
}

#[cfg(not(feature = "ggml-peer"))]
fn llama_cpp_peer(
    _path: &Path,
    _test: BenchTest,
    _tokens: &[u32],
    _threads: usize,
    _reps: usize,
) -> Result<PeerMeasurement, BenchError> {
    Err(BenchError::Peer(
        "llama.cpp is a peer only in builds with `--features ggml-peer`".into(),
    ))
}
