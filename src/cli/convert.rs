//! `latte convert INPUT_DIR [-o OUT.gguf] [--type T] [--tensor-type REGEX=T ...] [--dry-run]`,
//! `latte convert TEXT.gguf --mmproj MMPROJ.gguf [-o OUT.gguf] [--type T]` (llama.cpp's two files
//! joined into one) and `latte convert --synthetic NAME -o OUT.gguf`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use latte::convert::pair::convert_pair;
use latte::convert::quantize::QuantizeOptions;
use latte::convert::summary::{KvShape, PlanSummary, DESCRIBE_CONTEXT, GENERATE_PROMPT};
use latte::convert::synthetic::SyntheticModel;
use latte::convert::{Checkpoint, OutputTensor, Progress};

use super::human_bytes;

/// Convert a Qwen2-VL or LaTtE-Flow checkpoint directory into one GGUF file.
#[derive(Args)]
pub struct ConvertArgs {
    /// Checkpoint directory (config.json, *.safetensors, tokenizer files; generation/ and
    /// autoencoder/ for LaTtE-Flow).
    input: Option<PathBuf>,
    /// With INPUT a llama.cpp text GGUF: its vision projector (mmproj-*.gguf), joined into one file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["synthetic", "dry_run"])]
    mmproj: Option<PathBuf>,
    /// Output file (default: INPUT_DIR-TYPE.gguf beside the directory).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Type of tensors of 2+ dimensions: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k.
    #[arg(long = "type", value_name = "TYPE", default_value = "f16")]
    target: String,
    /// Per-tensor override, REGEX=TYPE (first matching rule wins), e.g. 'ffn_down=q6_k'.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
    /// Print the plan (types, sizes, groups, predicted memory) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write a synthetic model with random weights instead (latte-flow-2b: the paper's shapes).
    #[arg(long, value_name = "NAME", conflicts_with = "input")]
    synthetic: Option<String>,
    /// Seed of the synthetic model's weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    super::threads::configure(args.threads)?;
    let options = QuantizeOptions::parse(&args.target, &args.tensor_type)?;
    if let Some(name) = &args.synthetic {
        return run_synthetic(&args, name, &options);
    }
    let Some(input) = &args.input else {
        bail!("give a checkpoint directory to convert (or --synthetic NAME)");
    };
    if let Some(mmproj) = &args.mmproj {
        return run_pair(&args, input, mmproj, &options);
    }
    let checkpoint = Checkpoint::plan(input, &options)?;
    let groups = checkpoint
        .generation
        .as_ref()
        .map_or(0, |g| g.groups as usize);
    let kv = KvShape {
        layers: checkpoint.vlm.layers,
        kv_heads: checkpoint.vlm.kv_heads,
        head_dim: checkpoint.vlm.head_dim(),
    };
    let summary = PlanSummary::new(&checkpoint.tensors, groups, kv);
    report_fallbacks(&checkpoint.tensors);
    if args.dry_run {
        print!(
            "{}",
            render_plan(&checkpoint.tensors, &summary, checkpoint.kind.name())
        );
        return Ok(());
    }
    let output = args.output.clone().unwrap_or_else(|| {
        let stem = input
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned());
        input.with_file_name(format!("{stem}-{}.gguf", args.target.to_lowercase()))
    });
    let bar = progress_bar(args.quiet, summary.total_bytes);
    let mut on_progress = |p: Progress| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{} tensors", p.tensors_done, p.tensors_total));
    };
    let size = checkpoint.write(&output, &mut on_progress)?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} ({}, {} tensors, {})",
        output.display(),
        human_bytes(size),
        checkpoint.kind.name(),
        checkpoint.tensors.len(),
        args.target.to_lowercase()
    );
    Ok(())
}

fn run_synthetic(args: &ConvertArgs, name: &str, options: &QuantizeOptions) -> Result<()> {
    let model = SyntheticModel::plan(name, options, args.seed)?;
    let kv = KvShape {
        layers: model.vlm.layers,
        kv_heads: model.vlm.kv_heads,
        head_dim: model.vlm.head_dim(),
    };
    let summary = PlanSummary::new(&model.tensors, model.generation.groups as usize, kv);
    report_fallbacks(&model.tensors);
    if args.dry_run {
        print!(
            "{}",
            render_plan(&model.tensors, &summary, &format!("synthetic {name}"))
        );
        return Ok(());
    }
    let Some(output) = &args.output else {
        bail!("--synthetic needs -o OUT.gguf");
    };
    let bar = progress_bar(args.quiet, summary.total_bytes);
    let size = model.write(output, &mut |p: Progress| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        bar.set_message(format!("{}/{} tensors", p.tensors_done, p.tensors_total));
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} (synthetic {name}, {} tensors, {})",
        output.display(),
        human_bytes(size),
        model.tensors.len(),
        args.target.to_lowercase()
    );
    Ok(())
}

fn progress_bar(quiet: bool, total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {binary_bytes}/{binary_total_bytes} {msg} ({binary_bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Lists tensors whose rows do not fit the requested type's block, as `latte quantize` does.
/// llama.cpp's text model and projector, joined.
fn run_pair(
    args: &ConvertArgs,
    text: &Path,
    mmproj: &Path,
    options: &QuantizeOptions,
) -> Result<()> {
    let Some(output) = &args.output else {
        bail!("give the joined file's name with -o (the inputs are files, not a directory)");
    };
    let report = convert_pair(text, mmproj, output, options)?;
    let fell_back = report.plans.iter().filter(|p| p.fell_back()).count();
    if fell_back > 0 {
        eprintln!(
            "latte convert: {fell_back} tensors fell back to a type whose block fits their rows"
        );
    }
    eprintln!(
        "latte convert: joined {} and {} ({}) into {} ({})",
        text.display(),
        mmproj.display(),
        human_bytes(report.input_bytes),
        output.display(),
        human_bytes(report.output_bytes)
    );
    Ok(())
}

fn report_fallbacks(tensors: &[OutputTensor]) {
    let fallbacks: Vec<_> = tensors.iter().filter(|t| t.plan.fell_back()).collect();
    if !fallbacks.is_empty() {
        eprintln!(
            "{} tensors fell back (rows do not fit the type's block):",
            fallbacks.len()
        );
        for t in fallbacks {
            eprintln!(
                "  {}: {} -> {}",
                t.plan.name, t.plan.requested, t.plan.target
            );
        }
    }
}

fn render_plan(tensors: &[OutputTensor], s: &PlanSummary, kind: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "plan: {kind} model, {} tensors", s.tensors);
    for t in tensors {
        let group = t.group.map_or(String::new(), |g| format!("  group {g}"));
        let _ = writeln!(
            out,
            "  {:48} {:>6} {:24} {:>12}{group}",
            t.plan.name,
            t.plan.target.name(),
            format!("{:?}", t.dims),
            human_bytes(t.n_bytes()),
        );
    }
    let _ = writeln!(out, "total:            {}", human_bytes(s.total_bytes));
    let _ = writeln!(out, "  text model:     {}", human_bytes(s.text_bytes));
    let _ = writeln!(out, "  vision tower:   {}", human_bytes(s.vision_bytes));
    if s.generate_peak.is_some() {
        let _ = writeln!(
            out,
            "  flow (shared):  {}",
            human_bytes(s.flow_shared_bytes)
        );
        let _ = writeln!(out, "  DC-AE decoder:  {}", human_bytes(s.dcae_bytes));
        for (g, bytes) in s.group_bytes.iter().enumerate() {
            let _ = writeln!(out, "  expert group {g}: {}", human_bytes(*bytes));
        }
    }
    let _ = writeln!(
        out,
        "predicted peak memory, latte describe: {} (weights + f32 KV cache for {DESCRIBE_CONTEXT} tokens)",
        human_bytes(s.describe_peak)
    );
    if let Some(peak) = s.generate_peak {
        let _ = writeln!(
            out,
            "predicted peak memory, latte generate: {} (max of prefill and sampling with one group prefetched; prompts of {GENERATE_PROMPT} tokens)",
            human_bytes(peak)
        );
    }
    out
}
