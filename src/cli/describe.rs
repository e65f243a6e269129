//! `latte describe [-m MODEL [--mmproj FILE]] [--image FILE] -p TEXT [-n 128] [--temp 0] [--top-k 40]
//! [--top-p 0.95] [-s SEED] [-t N] [--max-image-pixels N] [--device auto|cpu|wgpu[:N]]`
//!
//! Answer a question about an image (or a text-only prompt). Without `-m`, the demo model embedded
//! in the binary (the one `latte generate` uses). `--mmproj` is llama.cpp's flag: a text model
//! and its vision projector in two files, as llama.cpp's converter writes Qwen2-VL. The answer alone goes to stdout, streamed as it
//! is decoded; load time and speeds go to stderr. Short flags are llama.cpp's.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use latte::backend::{Backend, DeviceChoice};
use latte::image::{load_rgb, DEFAULT_MAX_INPUT_PIXELS};
use latte::model::vision::VisionConfig;
use latte::model::ModelFile;
use latte::pipeline::{DescribeRequest, Describer};
use latte::sampling::SamplingParams;

use super::device::{on_device, Device};

#[derive(Args)]
#[command(about = "Describe an image or answer a question about it (image understanding)")]
pub struct DescribeArgs {
    /// The model (GGUF); default: the demo model embedded in the binary
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// The vision projector of a text model in two files (llama.cpp's mmproj-*.gguf)
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,
    /// The image (PNG, JPEG or WebP); without it the prompt is text only
    #[arg(long)]
    image: Option<PathBuf>,
    /// The question or instruction
    #[arg(short, long)]
    prompt: String,
    /// Answer tokens at most
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Keep the K most likely tokens (0: all)
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Random seed of the sampler
    #[arg(short, long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores)
    #[arg(short, long)]
    threads: Option<usize>,
    /// Largest input image accepted, in pixels
    #[arg(long, default_value_t = DEFAULT_MAX_INPUT_PIXELS)]
    max_image_pixels: u64,
    /// Where to compute: auto (a hardware GPU if there is one, else the CPU), cpu, wgpu or wgpu:N
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

pub fn run(args: DescribeArgs) -> Result<()> {
    super::threads::configure(args.threads)?;
    let started = Instant::now();
    let file = super::open_model(args.model.as_deref(), args.mmproj.as_deref())?;
    // Before loading anything: a file without a tokenizer cannot read --prompt (describe has no
    // token-id input).
    if file.get("tokenizer.ggml.model").is_none() {
        anyhow::bail!(
            "{}: the file has no tokenizer, so --prompt cannot be read (latte describe takes text \
             prompts only)",
            file.name()
        );
    }
    let device = Device::open(args.device)?;
    on_device!(&device, b => answer(b, &args, &file, started))
}

fn answer<B: Backend>(
    backend: &B,
    args: &DescribeArgs,
    file: &ModelFile,
    started: Instant,
) -> Result<()> {
    let describer = Describer::load_on(backend, file)?;
    super::warn_missing_bytes(describer.tokenizer());
    let load_seconds = started.elapsed().as_secs_f64();
    let image = args
        .image
        .as_ref()
        .map(|path| load_rgb(path, args.max_image_pixels))
        .transpose()?;
    let sampling = SamplingParams {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: 1.0,
        seed: args.seed,
    };
    let request =
        DescribeRequest::question(image.as_ref(), &args.prompt, args.max_tokens, sampling);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_error = None;
    // A write error (a closed pipe) ends the answer there.
    let stats = describer.describe(&request, &mut |_, text| match out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
    {
        Ok(()) => ControlFlow::Continue(()),
        Err(e) => {
            write_error = Some(e);
            ControlFlow::Break(())
        }
    })?;
    if let Some(e) = write_error {
        return Err(e).context("cannot write the answer");
    }
    writeln!(out)?;
    // After the answer, so that a failing run still prints its one error line alone.
    if args.image.is_none() && VisionConfig::present(file) {
        eprintln!("latte: no --image given: the answer is from the text prompt alone");
    }
    let decode = stats
        .decode_tokens_per_second()
        .map_or("-".to_string(), |speed| format!("{speed:.1}"));
    eprintln!(
        "load {:.3} s | image {} tokens, {:.3} s | prompt {} tokens, {:.1} tok/s | answer {} tokens, {decode} tok/s{}",
        load_seconds,
        stats.image_tokens,
        stats.vision_seconds,
        stats.prompt_tokens,
        stats.prompt_tokens_per_second(),
        stats.generated_tokens,
        if stats.stopped { "" } else { " (not stopped: max tokens or context)" }
    );
    Ok(())
}
