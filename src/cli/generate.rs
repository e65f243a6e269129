//! `latte generate [-m MODEL] --prompt TEXT [--image PATH] [-o OUT.png] [--steps N] [--cfg S]
//! [--seed N] [--sampler euler|heun] [--dense] [--threads N] [--mem-budget SIZE]
//! [--device auto|cpu|wgpu[:N]] [--vram-budget SIZE] [--dry-run]`
//!
//! Without `-m`, the demo model embedded in the binary (assets/demo-f16.gguf). Arguments in, a PNG
//! with the generation parameters in its text chunks out, a progress bar and a per-phase summary
//! on stderr.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use latte::backend::{Backend, DeviceChoice};
use latte::image::png::write_png;
use latte::image::{load_rgb, DEFAULT_MAX_INPUT_PIXELS};
use latte::model::ModelFile;
use latte::pipeline::generate::{GenerateOptions, Generator, PhaseReport, Progress};
use latte::pipeline::prompt_context::image_prompt_text;
use latte::pipeline::{SamplerKind, StepInfo};
use latte::process_memory;
use latte::residency::{parse_size, total, ReleasePolicy};
use latte::tokenizer::Tokenizer;

use super::device::{on_device, Device};
use super::human_bytes;

/// The demo model shipped inside the binary (tools/make_demo_gguf.sh writes it).
pub(super) const DEMO_MODEL: &[u8] = include_bytes!("../../assets/demo-f16.gguf");
pub(super) const DEMO_NAME: &str = "<embedded demo model>";

#[derive(Clone, Copy, ValueEnum)]
enum Sampler {
    Euler,
    Heun,
}

/// Generate an image from a text prompt, optionally with an image in it (layerwise timestep experts:
/// one group of layers per step).
#[derive(Args)]
pub struct GenerateArgs {
    /// Model file (GGUF with a generation pathway); default: the demo model embedded in the binary.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// The prompt, e.g. "a red circle".
    #[arg(long, required_unless_present = "prompt_ids")]
    prompt: Option<String>,
    /// Token ids of the whole conditional prompt instead of --prompt (comma-separated), for files
    /// without a tokenizer such as `latte convert --synthetic` benchmark files.
    #[arg(
        long = "prompt-ids",
        value_name = "IDS",
        value_delimiter = ',',
        conflicts_with = "prompt"
    )]
    prompt_ids: Option<Vec<u32>>,
    /// An image the VLM sees in the prompt, before the text (PNG, JPEG or WebP); needs a model with
    /// a vision tower. With --prompt-ids, the ids hold one <|image_pad|> where the image goes.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Largest --image accepted, in pixels.
    #[arg(long, default_value_t = DEFAULT_MAX_INPUT_PIXELS)]
    max_image_pixels: u64,
    /// With --prompt-ids: token ids of the unconditional prompt [default: none, an empty prompt].
    #[arg(
        long = "uncond-ids",
        value_name = "IDS",
        value_delimiter = ',',
        requires = "prompt_ids"
    )]
    uncond_ids: Option<Vec<u32>>,
    /// Output PNG (written to a temporary file, then renamed).
    #[arg(short = 'o', long = "output", default_value = "latte.png")]
    output: PathBuf,
    /// Sampling steps [default: the model's, 40 for the demo].
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale s ≥ 0 (1 = no guidance) [default: the model's].
    #[arg(long, allow_negative_numbers = true)]
    cfg: Option<f32>,
    /// Noise seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Integration rule (Heun: two velocity evaluations per step).
    #[arg(long, value_enum, default_value = "euler")]
    sampler: Sampler,
    /// Run every layer at every step (the standard cost) instead of the owning group's.
    #[arg(long)]
    dense: bool,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Memory budget, e.g. 2G: release each expert group's pages when sampling leaves it.
    #[arg(long = "mem-budget", value_name = "SIZE")]
    mem_budget: Option<String>,
    /// Where to compute: auto (a hardware GPU if there is one, else the CPU), cpu, wgpu (the
    /// best GPU adapter, software ones included) or wgpu:N (see `latte devices`). The prompt
    /// prefill runs on the CPU; sampling and the decode on the device.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
    /// Device memory the run may use, e.g. 1G (sd.cpp's --max-vram): two expert-group slots if
    /// they fit, else one (synchronous switches); refused before running if one group does not fit.
    #[arg(long = "vram-budget", alias = "max-vram", value_name = "SIZE")]
    vram_budget: Option<String>,
    /// Print the predicted peak working memory per phase (host, and device on a GPU) and
    /// generate nothing.
    #[arg(long)]
    dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    super::threads::configure(args.threads)?;
    let budget = parse_budget("--mem-budget", args.mem_budget.as_deref())?;
    let device_budget = parse_budget("--vram-budget", args.vram_budget.as_deref())?;
    if !args.dry_run {
        check_output(&args.output)?;
    }
    let image = args
        .image
        .as_ref()
        .map(|path| load_rgb(path, args.max_image_pixels))
        .transpose()?;
    let file = match &args.model {
        Some(path) => ModelFile::open(path)?,
        None => ModelFile::from_bytes(DEMO_NAME, DEMO_MODEL.to_vec())?,
    };
    let device = Device::open(args.device)?;
    let run = Run {
        args: &args,
        file: &file,
        image: image.as_ref(),
        budget,
        device_budget,
        device_name: device.description(),
    };
    on_device!(&device, b => run.on(b))
}

fn parse_budget(flag: &str, size: Option<&str>) -> Result<Option<u64>> {
    size.map(|s| {
        parse_size(s).with_context(|| format!("{flag} '{s}' is not a size like 512M or 2G"))
    })
    .transpose()
}

/// One `latte generate` after its arguments are checked and the file and device opened.
struct Run<'a> {
    args: &'a GenerateArgs,
    file: &'a ModelFile,
    image: Option<&'a latte::image::RgbImage>,
    budget: Option<u64>,
    device_budget: Option<u64>,
    device_name: String,
}

impl Run<'_> {
    fn on<B: Backend>(&self, backend: &B) -> Result<()> {
        let (args, file) = (self.args, self.file);
        let file_len = file.gguf().bytes().len() as u64;
        // Release finished groups under a budget, or when the file would not fit in free memory.
        let policy = match (self.budget, process_memory::available_memory()) {
            (Some(_), _) => ReleasePolicy::ReleaseFinished,
            (None, Some(free)) if file_len > free => ReleasePolicy::ReleaseFinished,
            _ => ReleasePolicy::Keep,
        };
        let generator = Generator::load_on(backend, file, policy)?;
        let config = generator.replica().config();
        let options = GenerateOptions {
            steps: args.steps.unwrap_or(config.num_steps),
            guidance: args.cfg.unwrap_or(config.guidance_scale),
            seed: args.seed,
            sampler: match args.sampler {
                Sampler::Euler => SamplerKind::Euler,
                Sampler::Heun => SamplerKind::Heun,
            },
            dense: args.dense,
            device_budget: self.device_budget,
        };
        generator.schedule(&options)?;
        // Checks for a vision tower before any compute; the prompt's image tokens (without the
        // one placeholder the template writes) count towards its length.
        let image_tokens = self
            .image
            .map(|image| generator.image_tokens(image))
            .transpose()?;
        let (cond_ids, uncond_ids) = match (&args.prompt, &args.prompt_ids) {
            (Some(prompt), _) => {
                let tokenizer = Tokenizer::from_model_file(file)?;
                let cond_text = match self.image {
                    Some(_) => image_prompt_text(config, prompt),
                    None => config.prompt_text(prompt),
                };
                (
                    tokenizer.encode(&cond_text, true)?,
                    tokenizer.encode(&config.prompt_text(""), true)?,
                )
            }
            (None, Some(ids)) => (ids.clone(), args.uncond_ids.clone().unwrap_or_default()),
            (None, None) => bail!("give --prompt or --prompt-ids"),
        };

        let prompt_len = cond_ids.len() + image_tokens.map_or(0, |n| n.saturating_sub(1));
        if args.dry_run {
            return dry_run(
                &generator,
                &options,
                prompt_len,
                self.budget,
                &self.device_name,
            );
        }
        // A device budget too small fails here, before the prefill.
        generator.device_plan(&options, prompt_len.max(uncond_ids.len()))?;

        let bar =
            ProgressBar::with_draw_target(Some(options.steps as u64), ProgressDrawTarget::stderr());
        if args.quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg}")
                .expect("a valid template"),
        );
        let mut progress = Bar { bar: bar.clone() };
        let generated = generator.generate_with_image(
            &cond_ids,
            self.image,
            &uncond_ids,
            &options,
            &mut progress,
        )?;
        bar.finish_and_clear();
        if let Some(bad) = generated.image.iter().position(|v| !v.is_finite()) {
            bail!(
                "the decoded image holds a non-finite value (at index {bad}); no PNG written \
                 (is the guidance scale {} too large?)",
                options.guidance
            );
        }

        let model_name = match &args.model {
            Some(path) => path.display().to_string(),
            None => "demo (embedded)".to_string(),
        };
        let sampler = match options.sampler {
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
        };
        let (steps, guidance, seed) = (
            options.steps.to_string(),
            options.guidance.to_string(),
            options.seed.to_string(),
        );
        let prompt_text = match (&args.prompt, &args.prompt_ids) {
            (Some(prompt), _) => prompt.clone(),
            (None, ids) => format!("ids {:?}", ids.as_deref().unwrap_or_default()),
        };
        let mut text = vec![
            ("prompt", prompt_text.as_str()),
            ("seed", seed.as_str()),
            ("steps", steps.as_str()),
            ("guidance", guidance.as_str()),
            ("sampler", sampler),
            ("model", model_name.as_str()),
            ("Software", "latte"),
        ];
        let image_name = args.image.as_ref().map(|path| {
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            )
        });
        if let Some(name) = &image_name {
            text.push(("image", name.as_str()));
        }
        if options.dense {
            text.push(("dense", "true"));
        }
        write_png(
            &args.output,
            &generated.image,
            generated.height,
            generated.width,
            &text,
        )?;
        summary(&generated, options.dense, &self.device_name);
        eprintln!(
            "wrote {} ({}×{}, seed {}, {} steps, cfg {}, {})",
            args.output.display(),
            generated.width,
            generated.height,
            options.seed,
            options.steps,
            options.guidance,
            sampler
        );
        Ok(())
    }
}

/// Fails early (before any compute) when the output's directory is missing or not writable.
fn check_output(output: &Path) -> Result<()> {
    if output.is_dir() {
        bail!("{}: is a directory, not an output file", output.display());
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "{}: cannot write here: directory {} does not exist",
            output.display(),
            dir.display()
        );
    }
    let probe = tempfile_probe(&dir);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(error) => bail!("{}: cannot write here: {error}", output.display()),
    }
}

fn tempfile_probe(dir: &Path) -> PathBuf {
    dir.join(format!(".latte-write-check-{}", std::process::id()))
}

fn dry_run<B: Backend>(
    generator: &Generator<'_, B>,
    options: &GenerateOptions,
    prompt_len: usize,
    budget: Option<u64>,
    device: &str,
) -> Result<()> {
    let plan = generator.memory_plan(options, prompt_len)?;
    let parts = generator.residency().parts();
    println!(
        "{}: {} steps, cfg {}, {}; file {} (VLM text {} + vocabulary {}, vision {}, shared generation {}, {} groups of {} each, decoder {})",
        generator.file().name(),
        options.steps,
        options.guidance,
        if options.dense { "dense" } else { "layerwise" },
        human_bytes(generator.file().gguf().bytes().len() as u64),
        human_bytes(total(&parts.text)),
        human_bytes(total(&parts.vocabulary)),
        human_bytes(total(&parts.vision)),
        human_bytes(total(&parts.shared)),
        parts.groups.len(),
        human_bytes(parts.groups.first().map_or(0, |g| total(g))),
        human_bytes(total(&parts.decoder)),
    );
    println!("predicted peak working memory per phase (mapped weights resident + buffers):");
    for phase in &plan {
        println!(
            "  {:<28} {:>12}  (weights {}, buffers {})",
            phase.phase,
            human_bytes(phase.total()),
            human_bytes(phase.weights),
            human_bytes(phase.buffers)
        );
    }
    let peak = plan.iter().map(|p| p.total()).max().unwrap_or(0);
    println!("peak: {}", human_bytes(peak));
    if let Some(budget) = budget {
        if peak > budget {
            println!(
                "warning: the predicted peak exceeds --mem-budget {}",
                human_bytes(budget)
            );
        }
    }
    if let Some(plan) = generator.device_plan(options, prompt_len)? {
        println!(
            "device {device}: {} expert-group slot(s) of {} ({}); predicted device memory per phase:",
            plan.slots.slots,
            human_bytes(plan.slots.slot_bytes),
            if plan.slots.slots >= 2 || options.dense {
                "the next group uploads while the current one runs"
            } else {
                "synchronous group switches"
            }
        );
        for (phase, bytes) in &plan.phases {
            println!("  {phase:<28} {:>12}", human_bytes(*bytes));
        }
        let peak = plan.phases.iter().map(|p| p.1).max().unwrap_or(0);
        println!("device peak: {}", human_bytes(peak));
    }
    Ok(())
}

fn summary(generated: &latte::pipeline::generate::Generated, dense: bool, device: &str) {
    let phases: &[PhaseReport] = &generated.phases;
    let rss = |p: &PhaseReport| p.peak_rss.map_or("n/a".to_string(), human_bytes);
    let on_device = phases.iter().any(|p| p.device_peak.is_some());
    eprintln!("device: {device}");
    eprintln!(
        "phase                      time      s/step   peak RSS{}",
        if on_device { "  device peak" } else { "" }
    );
    let mut sampling = 0.0;
    let mut steps = 0;
    for p in phases {
        let per_step = if p.steps > 0 {
            format!("{:.4}", p.seconds / p.steps as f64)
        } else {
            "-".to_string()
        };
        if p.steps > 0 {
            sampling += p.seconds;
            steps += p.steps;
        }
        let device_peak = p
            .device_peak
            .map_or(String::new(), |b| format!(" {:>12}", human_bytes(b)));
        eprintln!(
            "{:<24} {:>8.3}s {:>10} {:>10}{device_peak}",
            p.name,
            p.seconds,
            per_step,
            rss(p)
        );
    }
    if on_device {
        eprintln!(
            "expert groups uploaded to the device: {}",
            generated.group_uploads
        );
    }
    if steps > 0 {
        eprintln!(
            "sampling ({}): {steps} steps in {sampling:.3}s, {:.4} s/step",
            if dense { "dense" } else { "layerwise" },
            sampling / steps as f64
        );
    }
}

/// The progress bar: one tick per step, the active group and the last step's seconds.
struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn phase(&mut self, name: &str) {
        self.bar.set_message(name.to_string());
    }

    fn step(&mut self, step: &StepInfo, seconds: f64) {
        self.bar
            .set_message(format!("group {} · {seconds:.3} s/step", step.group));
        self.bar.inc(1);
    }
}
