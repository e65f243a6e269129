//! `latte quantize IN.gguf OUT.gguf --type T [--tensor-type REGEX=T ...]`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use latte::convert::quantize::{quantize_gguf, QuantizeOptions};

use super::human_bytes;

/// Re-quantize a GGUF file: tensors of 2+ dimensions become TYPE, 1-D tensors F32.
#[derive(Args)]
pub struct QuantizeArgs {
    /// Input GGUF file.
    input: PathBuf,
    /// Output GGUF file (written to a temporary file, then renamed).
    output: PathBuf,
    /// Target type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k.
    #[arg(long = "type", value_name = "TYPE")]
    target: String,
    /// Per-tensor override, REGEX=TYPE (first matching rule wins), e.g. 'ffn_down=q6_k'.
    #[arg(long = "tensor-type", value_name = "REGEX=TYPE")]
    tensor_type: Vec<String>,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let options = QuantizeOptions::parse(&args.target, &args.tensor_type)?;
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
    eprintln!(
        "{} tensors, {} -> {} ({})",
        report.plans.len(),
        human_bytes(report.input_bytes),
        human_bytes(report.output_bytes),
        args.output.display()
    );
    Ok(())
}
