//! `latte generate [-m MODEL] -p TEXT [--negative-prompt TEXT] [--image PATH] [-o OUT.png]
//! [-b N] [--steps N] [--cfg|--cfg-scale S] [-s SEED|-1] [--sampler euler|heun] [--dense]
//! [-t N] [--mem-budget SIZE] [--device auto|cpu|wgpu[:N]] [--vram-budget SIZE] [--dry-run]`
//! (`--prompt-ids IDS [--uncond-ids IDS]` instead of `-p` for files without a tokenizer)
//!
//! Without `-m`, the demo model embedded in the binary (assets/demo-f16.gguf). Arguments in, PNGs
//! with the generation parameters in their text chunks out (`-o -`: standard output), a progress
//! bar and a per-phase summary on stderr. Short flags are llama.cpp's and stable-diffusion.cpp's.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use latte::backend::{Backend, DeviceChoice};

use latte::image::{load_rgb, DEFAULT_MAX_INPUT_PIXELS};
use latte::model::ModelFile;
use latte::output::{check_writable, write_output, Content, Destination};
use latte::pipeline::generate::{
    measure_device_facts, GenerateOptions, GenerationPlanner, Generator, PhaseReport, Progress,
    MAX_BATCH,
};
use latte::pipeline::parameters::ImageParameters;
use latte::pipeline::plan::release_policy;
use latte::pipeline::prompt_context::image_prompt_text;
use latte::pipeline::{SamplerKind, StepInfo};
use latte::process_memory;
use latte::residency::{parse_size, total};
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

/// `--seed`: a number, or -1 for one drawn now.
#[derive(Clone, Copy, Debug)]
enum SeedArg {
    Fixed(u64),
    Random,
}

fn parse_seed(text: &str) -> Result<SeedArg, String> {
    let text = text.trim();
    if text == "-1" {
        return Ok(SeedArg::Random);
    }
    if text.starts_with('-') {
        return Err(format!(
            "{text} is negative: a seed is 0 to {}, or -1 for a random one",
            u64::MAX
        ));
    }
    text.parse().map(SeedArg::Fixed).map_err(|_| {
        format!(
            "'{text}' is not a seed (0 to {}, or -1 for a random one)",
            u64::MAX
        )
    })
}

/// Generate images from a text prompt, optionally with an image in it (layerwise timestep experts:
/// one group of layers per step).
#[derive(Args)]
pub struct GenerateArgs {
    /// Model file (GGUF with a generation pathway); default: the demo model embedded in the binary.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// The prompt, e.g. "a red circle".
    #[arg(short = 'p', long, required_unless_present = "prompt_ids")]
    prompt: Option<String>,
    /// The unconditional prompt of guidance (what the image should not be) instead of the empty
    /// one; written with the model's prompt template, as --prompt is.
    #[arg(
        long = "negative-prompt",
        value_name = "TEXT",
        conflicts_with = "prompt_ids"
    )]
    negative_prompt: Option<String>,
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
    /// Output PNG (written to a temporary file, then renamed; a device or FIFO is written
    /// directly; - is standard output). With --batch-count N, image k > 1 goes beside it as
    /// stable-diffusion.cpp names them: out.png, out_2.png, …, out_N.png (a name without an
    /// extension gets _k at its end).
    #[arg(short = 'o', long = "output", default_value = "latte.png")]
    output: PathBuf,
    /// Images to make, with seeds s, s+1, …, s+N−1, sampled together (each step's expert group
    /// serves the whole batch); 1 to 64.
    #[arg(
        short = 'b',
        long = "batch-count",
        value_name = "N",
        default_value_t = 1
    )]
    batch_count: usize,
    /// Sampling steps [default: the model's, 40 for the demo].
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale s ≥ 0 (1 = no guidance) [default: the model's].
    #[arg(long, alias = "cfg-scale", allow_negative_numbers = true)]
    cfg: Option<f32>,
    /// Noise seed; -1 draws a random one (printed on stderr; every PNG records its seed).
    #[arg(
        short = 's',
        long,
        default_value = "0",
        allow_negative_numbers = true,
        value_parser = parse_seed
    )]
    seed: SeedArg,
    /// Integration rule (Heun: two velocity evaluations per step).
    #[arg(long, value_enum, default_value = "euler")]
    sampler: Sampler,
    /// Run every layer at every step (the standard cost) instead of the owning group's.
    #[arg(long)]
    dense: bool,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
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
    /// Print the predicted peak working memory per phase (host, and device on a GPU), planned
    /// from the file's metadata and tensor sizes without loading the models, and generate nothing.
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
    if !(1..=MAX_BATCH).contains(&args.batch_count) {
        bail!(
            "--batch-count {}: a batch makes 1 to {MAX_BATCH} images",
            args.batch_count
        );
    }
    let outputs = batch_outputs(&args.output, args.batch_count);
    if !args.dry_run {
        check_outputs(&args.output, &outputs)?;
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
    // What the process holds before any model is loaded (code, runtime, device, a file held in
    // memory): the baseline the plan adds to every phase.
    let baseline = process_memory::current_rss().unwrap_or(0);
    let run = Run {
        args: &args,
        file: &file,
        image: image.as_ref(),
        budget,
        device_budget,
        device_name: device.description(),
        outputs,
        baseline,
    };
    on_device!(&device, b => run.on(b))
}

fn parse_budget(flag: &str, size: Option<&str>) -> Result<Option<u64>> {
    size.map(|s| {
        parse_size(s).with_context(|| format!("{flag} '{s}' is not a size like 512M or 2G"))
    })
    .transpose()
}

/// The files a batch of `n` writes: `output` itself, then stable-diffusion.cpp's names for the
/// others (`out.png` → `out_2.png`, `out_3.png`, …; `out` → `out_2`, …).
fn batch_outputs(output: &Path, n: usize) -> Vec<PathBuf> {
    let mut paths = vec![output.to_path_buf()];
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned());
    for k in 2..=n {
        let numbered = match (&name, output.extension()) {
            (Some(_), Some(ext)) => {
                let stem = output.file_stem().unwrap_or_default().to_string_lossy();
                format!("{stem}_{k}.{}", ext.to_string_lossy())
            }
            (Some(name), None) => format!("{name}_{k}"),
            (None, _) => format!("{}_{k}", output.display()),
        };
        paths.push(output.with_file_name(numbered));
    }
    paths
}

/// Refuses, before any work, outputs that cannot be written, and a batch aimed at a single
/// stream (stdout, a device, a FIFO), which would hold several PNGs back to back.
fn check_outputs(output: &Path, outputs: &[PathBuf]) -> Result<()> {
    let png = Content::Binary("PNG");
    if outputs.len() > 1 {
        let single = match Destination::of(output, png)? {
            Destination::Stdout => Some("standard output"),
            Destination::Direct => Some("a device or FIFO"),
            Destination::Replace { .. } => None,
        };
        if let Some(what) = single {
            bail!(
                "-o {}: is {what}, which takes one PNG; --batch-count {} needs a file name \
                 (out.png gives out.png, out_2.png, …)",
                output.display(),
                outputs.len()
            );
        }
    }
    for path in outputs {
        check_writable(path, png)?;
    }
    Ok(())
}

/// The file has no tokenizer: say which flag takes the prompt instead.
fn tokenizer_of(file: &ModelFile) -> Result<Tokenizer> {
    if file.get("tokenizer.ggml.model").is_none() {
        bail!(
            "{}: the file has no tokenizer, so --prompt cannot be read; give the prompt as token \
             ids with --prompt-ids (and the unconditional one with --uncond-ids)",
            file.name()
        );
    }
    let tokenizer = Tokenizer::from_model_file(file)?;
    super::warn_missing_bytes(&tokenizer);
    Ok(tokenizer)
}

/// One `latte generate` after its arguments are checked and the file and device opened.
struct Run<'a> {
    args: &'a GenerateArgs,
    file: &'a ModelFile,
    image: Option<&'a latte::image::RgbImage>,
    budget: Option<u64>,
    device_budget: Option<u64>,
    device_name: String,
    outputs: Vec<PathBuf>,
    baseline: u64,
}

impl Run<'_> {
    fn on<B: Backend>(&self, backend: &B) -> Result<()> {
        let (args, file) = (self.args, self.file);
        // Everything below up to the load reads metadata only: bad options fail in milliseconds,
        // and a dry run never loads a model.
        let policy = release_policy(file, self.budget);
        let planner = GenerationPlanner::new(backend, file, policy, self.baseline)?;
        let config = planner.flow();
        let first_seed = match args.seed {
            SeedArg::Fixed(seed) => seed,
            SeedArg::Random => {
                let seed = latte::rng::random_seed();
                eprintln!("latte: random seed {seed}");
                seed
            }
        };
        let seeds: Vec<u64> = (0..args.batch_count as u64)
            .map(|k| first_seed.checked_add(k))
            .collect::<Option<_>>()
            .with_context(|| {
                format!(
                    "--seed {first_seed} with --batch-count {}: the seeds pass {}",
                    args.batch_count,
                    u64::MAX
                )
            })?;
        let options = GenerateOptions {
            steps: args.steps.unwrap_or(config.num_steps),
            guidance: args.cfg.unwrap_or(config.guidance_scale),
            seed: first_seed,
            sampler: match args.sampler {
                Sampler::Euler => SamplerKind::Euler,
                Sampler::Heun => SamplerKind::Heun,
            },
            dense: args.dense,
            device_budget: self.device_budget,
        };
        // The step count is bounded here, before anything sized by it exists.
        planner.schedule(&options)?;
        // Checks for a vision tower before any compute; the prompt's image tokens (without the
        // one placeholder the template writes) count towards its length.
        let image_tokens = self
            .image
            .map(|image| planner.image_tokens(image))
            .transpose()?;
        let (cond_ids, uncond_ids) = match (&args.prompt, &args.prompt_ids) {
            (Some(prompt), _) => {
                let tokenizer = tokenizer_of(file)?;
                let cond_text = match self.image {
                    Some(_) => image_prompt_text(config, prompt),
                    None => config.prompt_text(prompt),
                };
                // The unconditional prompt stays text only, in the same template.
                let negative = args.negative_prompt.as_deref().unwrap_or("");
                (
                    tokenizer.encode(&cond_text, true)?,
                    tokenizer.encode(&config.prompt_text(negative), true)?,
                )
            }
            (None, Some(ids)) => (ids.clone(), args.uncond_ids.clone().unwrap_or_default()),
            (None, None) => bail!("give --prompt or --prompt-ids"),
        };
        let prompt_len = (cond_ids.len() + image_tokens.map_or(0, |n| n.saturating_sub(1)))
            .max(uncond_ids.len());
        if args.dry_run {
            return self.dry_run(backend, &planner, &options, prompt_len);
        }

        let generator = Generator::load_on(backend, file, policy)?;
        // A device budget too small fails here, before the prefill.
        generator.device_plan(&options, prompt_len)?;

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
        // Non-finite latents or images (a guidance scale far too large) end the run there, with
        // the seed and the guidance in the message, before any PNG is written.
        let generated = generator.generate_batch(
            &cond_ids,
            self.image,
            &uncond_ids,
            &options,
            &seeds,
            &mut progress,
        );
        bar.finish_and_clear();
        let generated = generated?;

        let model_name = match &args.model {
            Some(path) => path.display().to_string(),
            None => "demo (embedded)".to_string(),
        };
        let sampler = options.sampler.name();
        let prompt_text = match (&args.prompt, &args.prompt_ids) {
            (Some(prompt), _) => prompt.clone(),
            (None, ids) => format!("ids {:?}", ids.as_deref().unwrap_or_default()),
        };
        let image_name = args.image.as_ref().map(|path| {
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            )
        });
        for (one, path) in generated.images.iter().zip(&self.outputs) {
            let parameters = ImageParameters {
                prompt: &prompt_text,
                negative_prompt: args.negative_prompt.as_deref(),
                seed: one.seed,
                options: &options,
                model: &model_name,
                image: image_name.as_deref(),
            };
            let png = parameters.encode_png(&one.image, generated.height, generated.width)?;
            write_output(path, &png, Content::Binary("PNG"))?;
        }
        summary(
            &generated.phases,
            generated.group_uploads,
            options.dense,
            &self.device_name,
        );
        for (one, path) in generated.images.iter().zip(&self.outputs) {
            eprintln!(
                "wrote {} ({}×{}, seed {}, {} steps, cfg {}, {})",
                path.display(),
                generated.width,
                generated.height,
                one.seed,
                options.steps,
                options.guidance,
                sampler
            );
        }
        Ok(())
    }

    /// `--dry-run`: the plan from the file's metadata and tensor sizes; on a device, the replica
    /// alone is loaded there (its repacked group sizes and shared bytes are the device's to tell).
    fn dry_run<B: Backend>(
        &self,
        backend: &B,
        planner: &GenerationPlanner<'_, B>,
        options: &GenerateOptions,
        prompt_len: usize,
    ) -> Result<()> {
        let file = self.file;
        let batch = self.args.batch_count;
        let plan = planner.memory_plan(options, prompt_len, batch)?;
        let parts = planner.parts();
        println!(
            "{}: {} steps, cfg {}, {}, {} image{}; file {} (VLM text {} + vocabulary {}, vision {}, shared generation {}, {} groups of {} each, decoder {})",
            file.name(),
            options.steps,
            options.guidance,
            if options.dense { "dense" } else { "layerwise" },
            batch,
            if batch == 1 { "" } else { "s" },
            human_bytes(file.gguf().bytes().len() as u64),
            human_bytes(total(&parts.text)),
            human_bytes(total(&parts.vocabulary)),
            human_bytes(total(&parts.vision)),
            human_bytes(total(&parts.shared)),
            parts.groups.len(),
            human_bytes(parts.groups.first().map_or(0, |g| total(g))),
            human_bytes(total(&parts.decoder)),
        );
        println!(
            "predicted peak working memory per phase (process baseline {} + mapped weights resident + buffers):",
            human_bytes(plan.baseline)
        );
        for phase in &plan.phases {
            println!(
                "  {:<28} {:>12}  (weights {}, buffers {})",
                phase.phase,
                human_bytes(plan.baseline + phase.total()),
                human_bytes(phase.weights),
                human_bytes(phase.buffers)
            );
        }
        let peak = plan.peak();
        println!("peak: {}", human_bytes(peak));
        if let Some(budget) = self.budget {
            if peak > budget {
                println!(
                    "warning: the predicted peak exceeds --mem-budget {}",
                    human_bytes(budget)
                );
            }
        }
        if backend.device_memory().is_some() {
            let facts = measure_device_facts(backend, file)?;
            if let Some(plan) = planner.device_plan(options, prompt_len, facts)? {
                println!(
                    "device {}: {} expert-group slot(s) of {} ({}); predicted device memory per phase:",
                    self.device_name,
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
        }
        if let Some(measured) = process_memory::peak_rss() {
            println!(
                "measured peak RSS of this dry run: {} (no model loaded)",
                human_bytes(measured)
            );
        }
        Ok(())
    }
}

fn summary(phases: &[PhaseReport], group_uploads: usize, dense: bool, device: &str) {
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
        eprintln!("expert groups uploaded to the device: {}", group_uploads);
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
