//! Command-line parsing and dispatch. Each subcommand lives in its own file and only translates
//! arguments into library calls and results into text; errors become one line on stderr and a
//! non-zero exit code.

mod bench;
mod convert;
mod describe;
mod device;
mod generate;
mod info;
mod interrupt;
mod quantize;
mod serve;
mod threads;
mod tokenize;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "latte",
    version,
    about = "Inference engine for LaTtE-Flow models (one GGUF file: understand and generate images)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark a model: text tokens/s, image seconds per step and per image, memory (llama-bench style)
    Bench(bench::BenchArgs),
    Convert(convert::ConvertArgs),
    Describe(describe::DescribeArgs),
    Devices(device::DevicesArgs),
    Generate(generate::GenerateArgs),
    Info(info::InfoArgs),
    Quantize(quantize::QuantizeArgs),
    Serve(serve::ServeArgs),
    Tokenize(tokenize::TokenizeArgs),
}

/// Runs the command line and maps failures to exit code 1 (clap uses 2 for usage errors).
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The server stops on its own signals (it writes no temporary files).
    if !matches!(cli.command, Command::Serve(_)) {
        interrupt::install();
    }
    let result = match cli.command {
        Command::Bench(args) => bench::run_bench(args),
        Command::Convert(args) => convert::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Devices(args) => device::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Info(args) => info::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Tokenize(args) => tokenize::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latte: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The model a command runs: `-m` (with llama.cpp's vision projector from `--mmproj`), or the demo
/// model embedded in the binary.
pub fn open_model(
    model: Option<&std::path::Path>,
    mmproj: Option<&std::path::Path>,
) -> anyhow::Result<latte::model::ModelFile> {
    use latte::model::{projector, ModelFile};
    Ok(match (model, mmproj) {
        (Some(model), Some(mmproj)) => projector::open_with_projector(model, mmproj)?,
        (Some(model), None) => ModelFile::open(model)?,
        (None, Some(_)) => anyhow::bail!("--mmproj needs -m: the text model it belongs to"),
        (None, None) => ModelFile::from_bytes(generate::DEMO_NAME, generate::DEMO_MODEL.to_vec())?,
    })
}

/// Says once, on stderr, what prompts lose when the vocabulary lacks byte tokens (a tokenizer
/// trained without the whole byte alphabet): HF `tokenizers`' behaviour, which latte follows.
pub fn warn_missing_bytes(tokenizer: &latte::tokenizer::Tokenizer) {
    let missing = tokenizer.missing_bytes();
    if missing.is_empty() {
        return;
    }
    let shown: Vec<String> = missing
        .iter()
        .take(8)
        .map(|b| format!("0x{b:02x}"))
        .collect();
    let more = match missing.len() {
        n if n > 8 => format!(" and {} more", n - 8),
        _ => String::new(),
    };
    let fate = match tokenizer.unknown_id() {
        Some(id) => format!("each becomes the unknown token {id}"),
        None => "they are dropped from prompts".to_string(),
    };
    eprintln!(
        "latte: warning: the vocabulary has no token for byte(s) {}{more}: {fate}, as HF tokenizers does",
        shown.join(", ")
    );
}

/// Bytes in binary units, as llama.cpp prints sizes.
pub use latte::residency::format_size as human_bytes;
