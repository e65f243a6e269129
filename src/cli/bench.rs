//! `latte bench [-m MODEL] [-t THREADS,...] [-r REPS] [--tests pp512,tg128,img,img-dense,vae,load]
//! [-o md|csv|json] [--steps N] [--mem-budget SIZE] [--device D] [--vram-budget SIZE]
//! [--llama-cpp] [--peer-json FILE ...] [--trace FILE]`: llama-bench for a unified model. Rows go
//! to stderr as they are measured, the report to stdout.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use latte::backend::DeviceChoice;
use latte::bench::bench_test::BenchTest;
use latte::bench::peers::{attach, read_peer_file};
use latte::bench::runner::{run, BenchOptions, ImageTrace};
use latte::bench::{Build, Machine, ModelDescription, Report};
use latte::model::ModelFile;
use latte::output::{check_writable, write_output, Content};
use latte::residency::{parse_size, ReleasePolicy};

use super::device::{on_device, Device};
use super::generate::{DEMO_MODEL, DEMO_NAME};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Md,
    Csv,
    Json,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Model file (default: the demo model embedded in the binary)
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Thread counts to measure, comma separated (default: all cores)
    #[arg(short, long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Repetitions per test (after one warm-up)
    #[arg(short, long, default_value_t = 3)]
    reps: usize,
    /// Tests, comma separated: ppN, tgN, img, img-dense, vae, load
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pp512,tg128,img,img-dense,vae,load"
    )]
    tests: Vec<BenchTest>,
    /// Report format on stdout
    #[arg(short = 'o', long, value_enum, default_value = "md")]
    output: Format,
    /// Sampling steps of the image tests (default: the file's)
    #[arg(long)]
    steps: Option<usize>,
    /// The image tests' prompt
    #[arg(long, default_value = "a red circle")]
    prompt: String,
    /// Release finished expert groups as `latte generate --mem-budget` does
    #[arg(long)]
    mem_budget: Option<String>,
    /// Also run llama.cpp on the text tests (builds with `--features ggml-peer`)
    #[arg(long)]
    llama_cpp: bool,
    /// Peer results measured in this run (tools/bench/pytorch_peer.py --json FILE)
    #[arg(long)]
    peer_json: Vec<PathBuf>,
    /// Write each image test's per-step times and RSS over time (JSON) here, for plots
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Where to compute: auto, cpu, wgpu or wgpu:N (image tests prefill on the CPU either way)
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
    /// Device memory the image tests may use, e.g. 1G
    #[arg(long = "vram-budget", alias = "max-vram", value_name = "SIZE")]
    vram_budget: Option<String>,
}

pub fn run_bench(args: BenchArgs) -> Result<()> {
    // Each repetition keeps its timings and RSS trace: bounded like every user number.
    const MAX_REPS: usize = 10_000;
    if args.reps == 0 || args.reps > MAX_REPS {
        bail!("--reps must be 1 to {MAX_REPS}, not {}", args.reps);
    }
    if let Some(steps) = args.steps {
        if steps > latte::schedule::MAX_STEPS {
            bail!(
                "--steps {steps} is over the most a schedule holds ({})",
                latte::schedule::MAX_STEPS
            );
        }
    }
    if args.steps == Some(0) {
        bail!("--steps must be at least 1");
    }
    let threads = if args.threads.is_empty() {
        vec![super::threads::available_cores()]
    } else {
        args.threads.clone()
    };
    for &t in &threads {
        super::threads::check(t)?;
    }
    if args.llama_cpp && !cfg!(feature = "ggml-peer") {
        bail!("--llama-cpp needs a build with `--features ggml-peer`");
    }
    let policy = match &args.mem_budget {
        Some(s) => {
            parse_size(s)
                .with_context(|| format!("--mem-budget '{s}' is not a size like 512M or 2G"))?;
            ReleasePolicy::ReleaseFinished
        }
        None => ReleasePolicy::Keep,
    };
    if let Some(path) = &args.trace {
        check_writable(path, Content::Text)?;
    }
    let peers = args
        .peer_json
        .iter()
        .map(|p| read_peer_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (file, path) = match &args.model {
        Some(path) => (ModelFile::open(path)?, path.display().to_string()),
        None => (
            ModelFile::from_bytes(DEMO_NAME, DEMO_MODEL.to_vec())?,
            DEMO_NAME.to_string(),
        ),
    };
    let device_budget = args
        .vram_budget
        .as_deref()
        .map(|s| {
            parse_size(s).with_context(|| format!("--vram-budget '{s}' is not a size like 1G"))
        })
        .transpose()?;
    let options = BenchOptions {
        tests: args.tests.clone(),
        threads,
        repetitions: args.reps,
        steps: args.steps,
        prompt: args.prompt.clone(),
        policy,
        llama_cpp: args.llama_cpp,
        trace_memory: args.trace.is_some(),
        model_path: args.model.clone(),
        device_budget,
    };
    let device = Device::open(args.device)?;
    let mut on_row = |row: &latte::bench::Measurement| {
        eprintln!(
            "latte bench: {} ({} threads): {:.4} {} ± {:.4}",
            row.test,
            row.threads,
            row.summary.mean,
            row.unit.label(),
            row.summary.std_dev
        )
    };
    let mut results = on_device!(&device, b => run(b, &file, &options, &mut on_row))?;
    for unmatched in attach(&mut results.rows, peers.into_iter().flatten().collect()) {
        eprintln!(
            "latte bench: peer {} row '{}' ({} threads) matches no measured test",
            unmatched.measurement.name, unmatched.test, unmatched.threads
        );
    }
    let report = Report {
        machine: Machine::detect(),
        build: Build::this(),
        model: describe_model(&file, path),
        device: device.description(),
        rows: results.rows,
    };
    match args.output {
        Format::Md => print!("{}", report.markdown()),
        Format::Csv => print!("{}", report.csv()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.json())?),
    }
    if let Some(path) = &args.trace {
        let text = serde_json::to_string_pretty(&traces_json(&results.traces))?;
        write_output(path, text.as_bytes(), Content::Text)?;
    }
    Ok(())
}

/// Size, parameter count and the types of the weights (`Q4_0 ×196, F32 ×113`).
fn describe_model(file: &ModelFile, path: String) -> ModelDescription {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut parameters = 0u64;
    for t in file.gguf().tensors() {
        if t.name().starts_with("latte.pad.") {
            continue;
        }
        parameters += t.n_elements();
        let ty = t.ty().to_string();
        match counts.iter_mut().find(|(name, _)| *name == ty) {
            Some((_, n)) => *n += 1,
            None => counts.push((ty, 1)),
        }
    }
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    ModelDescription {
        path,
        size_bytes: file.gguf().bytes().len() as u64,
        parameters,
        types: counts
            .iter()
            .map(|(ty, n)| format!("{ty} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn traces_json(traces: &[ImageTrace]) -> serde_json::Value {
    serde_json::Value::Array(
        traces
            .iter()
            .map(|t| {
                serde_json::json!({
                    "test": t.test,
                    "threads": t.threads,
                    "steps": t.steps.iter().map(|&(g, s)| serde_json::json!({"group": g, "seconds": s}))
                        .collect::<Vec<_>>(),
                    "rss": t.rss.iter().map(|s| [s.seconds, s.bytes as f64]).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
