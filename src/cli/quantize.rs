//! `latte quantize IN.gguf OUT.gguf TYPE [--tensor-type REGEX=T ...]` (llama-quantize's order
//! and type names: Q4_K_M, Q5_K_S, Q8_0, …) or `--type T` for one type everywhere.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use latte::convert::quantize::{quantize_gguf, QuantizeOptions};

use super::human_bytes;

/// Re-quantize a GGUF file, as llama-quantize does: TYPE is one of its mixtures (Q4_K_M,
/// Q4_K_S, Q5_K_M, Q5_K_S, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16, F32; Q4_K and Q5_K
/// mean Q4_K_M and Q5_K_M), with its per-tensor rules (the output and tied embedding Q6_K; more
/// bits for attn_v and ffn_down on some layers; see `latte::convert::preset`). 1-D tensors
/// become F32.
#[derive(Args)]
pub struct QuantizeArgs {
    /// Input GGUF file.
    input: PathBuf,
    /// Output GGUF file: a temporary file renamed into place; `-` (stdout), a FIFO or a device
    /// is written directly.
    output: PathBuf,
    /// llama-quantize type, e.g. Q4_K_M.
    #[arg(value_name = "TYPE", required_unless_present = "target")]
    preset: Option<String>,
    /// Instead of TYPE: every tensor of 2+ dimensions this type, no mixture (llama-quantize's
    /// --pure): f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k.
    #[arg(long = "type", value_name = "T", conflicts_with = "preset")]
    target: Option<String>,
    /// Per-tensor override, REGEX=TYPE (first matching rule wins, before the mixture's rules),
    /// e.g. 'ffn_down=q6_k'.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    super::threads::configure(args.threads)?;
    let options = match (&args.preset, &args.target) {
        (Some(preset), None) => QuantizeOptions::preset(preset, &args.tensor_type)?,
        (None, Some(target)) => QuantizeOptions::parse(target, &args.tensor_type)?,
        _ => bail!("give either TYPE (e.g. Q4_K_M) or --type T"),
    };
    let report = quantize_gguf(&args.input, &args.output, &options)?;
    let fallbacks: Vec<_> = report.plans.iter().filter(|p| p.fell_back()).collect();
    if !fallbacks.is_empty() {
        eprintln!(
            "{} tensors fell back (rows do not fit the type's block):",
            fallbacks.len()
        );
        for plan in fallbacks {
            eprintln!("  {}: {} -> {}", plan.name, plan.requested, plan.target);
        }
    }
    let mut by_type = std::collections::BTreeMap::new();
    for plan in &report.plans {
        *by_type.entry(plan.target.name()).or_insert(0usize) += 1;
    }
    let mix: Vec<String> = by_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
    eprintln!(
        "{} tensors ({}), {} -> {} ({})",
        report.plans.len(),
        mix.join(", "),
        human_bytes(report.input_bytes),
        human_bytes(report.output_bytes),
        args.output.display()
    );
    Ok(())
}
