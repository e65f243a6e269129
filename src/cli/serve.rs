//! `latte serve [-m MODEL [--mmproj FILE]] [--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N]
//! [--api-key KEY] [--timeout SECONDS] [--max-body SIZE] [--max-image-pixels N] [-t N]
//! [--device auto|cpu|wgpu[:N]]`
//!
//! One local server for chat about images and image generation, OpenAI-compatible (see
//! `latte::server`). Without `-m`, the embedded demo model. The model loads once; the address goes
//! to stderr when the server listens; SIGTERM or Ctrl-C stop it after the running requests.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use latte::backend::{Backend, DeviceChoice};
use latte::image::DEFAULT_MAX_INPUT_PIXELS;
use latte::model::ModelFile;
use latte::residency::parse_size;
use latte::server::{serve, Engine, ServerOptions};

use super::device::{on_device, Device};

#[derive(Args)]
#[command(
    about = "Serve the model over HTTP: OpenAI-compatible chat (with images) and image generation, and a web page"
)]
pub struct ServeArgs {
    /// The model (GGUF); default: the demo model embedded in the binary
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// The vision projector of a text model in two files (llama.cpp's mmproj-*.gguf)
    #[arg(long, value_name = "FILE")]
    mmproj: Option<PathBuf>,
    /// The address to listen on; anything but loopback is reachable by others
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free one, printed when listening)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests computed at once (chat turns side by side; images one at a time)
    #[arg(long, default_value_t = 1, value_name = "N")]
    parallel: usize,
    /// Requests that may wait for a slot; more are refused with 503
    #[arg(long, default_value_t = 16, value_name = "N")]
    queue: usize,
    /// Require 'Authorization: Bearer KEY' on every /v1/ request
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// The longest a request may wait and run, in seconds
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
    /// The largest request body, e.g. 20M
    #[arg(long, default_value = "20M", value_name = "SIZE")]
    max_body: String,
    /// The largest image a chat message may hold, in pixels
    #[arg(long, default_value_t = DEFAULT_MAX_INPUT_PIXELS)]
    max_image_pixels: u64,
    /// Worker threads of the model work (default: all cores)
    #[arg(short, long)]
    threads: Option<usize>,
    /// Where to compute: auto (a hardware GPU if there is one, else the CPU), cpu, wgpu or wgpu:N
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
}

/// Requests `--parallel` and `--queue` allow at most (each holds a KV cache or a batch).
const MAX_PARALLEL: usize = 64;
const MAX_QUEUE: usize = 4096;

pub fn run(args: ServeArgs) -> Result<()> {
    super::threads::configure(args.threads)?;
    if !(1..=MAX_PARALLEL).contains(&args.parallel) {
        bail!(
            "--parallel {}: 1 to {MAX_PARALLEL} requests at once",
            args.parallel
        );
    }
    if args.queue > MAX_QUEUE {
        bail!(
            "--queue {}: at most {MAX_QUEUE} waiting requests",
            args.queue
        );
    }
    if args.timeout == 0 {
        bail!("--timeout 0: a request needs at least one second");
    }
    let max_body = parse_size(&args.max_body).with_context(|| {
        format!(
            "--max-body '{}' is not a size like 512K or 20M",
            args.max_body
        )
    })?;
    let max_body = usize::try_from(max_body).unwrap_or(usize::MAX);
    if max_body < 1024 {
        bail!("--max-body {}: at least 1K", args.max_body);
    }
    if args.api_key.as_deref() == Some("") {
        bail!("--api-key is empty");
    }
    // The server runs for the rest of the process: the file and the device live as long.
    let file: &'static ModelFile = Box::leak(Box::new(super::open_model(
        args.model.as_deref(),
        args.mmproj.as_deref(),
    )?));
    if file.get("tokenizer.ggml.model").is_none() {
        bail!(
            "{}: the file has no tokenizer, so the server cannot read prompts",
            file.name()
        );
    }
    let (id, label) = match &args.model {
        Some(path) => (
            path.file_stem()
                .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned()),
            path.display().to_string(),
        ),
        None => ("latte-demo".to_string(), "demo (embedded)".to_string()),
    };
    let options = ServerOptions {
        host: args.host.clone(),
        port: args.port,
        parallel: args.parallel,
        queue: args.queue,
        api_key: args.api_key.clone(),
        timeout: Duration::from_secs(args.timeout),
        max_body,
        max_image_pixels: args.max_image_pixels,
    };
    let device: &'static Device = Box::leak(Box::new(Device::open(args.device)?));
    let description = device.description();
    on_device!(device, b => start(b, file, id, label, options, &description))
}

fn start<B: Backend + Send + Sync + 'static>(
    backend: &'static B,
    file: &'static ModelFile,
    id: String,
    label: String,
    options: ServerOptions,
    device: &str,
) -> Result<()> {
    let engine = Engine::load(backend, file, id, label)?;
    super::warn_missing_bytes(engine.tokenizer());
    let what = match engine.image_size() {
        Some([h, w]) => format!("chat and {w}x{h} images"),
        None => "chat".to_string(),
    };
    let model = engine.id().to_string();
    let open = options.api_key.is_none();
    serve(engine, options, |address| {
        eprintln!("latte serve: model '{model}' ({what}) on {device}");
        if !address.ip().is_loopback() && open {
            eprintln!(
                "latte serve: warning: listening on {} without --api-key: anyone who can reach \
                 this machine can use the server",
                address.ip()
            );
        }
        eprintln!("latte serve: listening on http://{address}");
    })?;
    eprintln!("latte serve: stopped");
    Ok(())
}
