//! `latte tokenize [-m MODEL] (-p TEXT | -f FILE) [--ids | --pieces] [--no-special]`
//!
//! The ids the model's tokenizer gives a text, as llama.cpp's `llama-tokenize` prints them: one
//! `id -> 'piece'` line per token (the piece is the token's own text, escaped), `--ids` the ids
//! alone as a list, `--pieces` the pieces alone, one per line. Special tokens written in the text
//! (`<|im_start|>`) are parsed unless `--no-special`. Without `-m`, the embedded demo model.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use latte::model::ModelFile;
use latte::tokenizer::{Tokenizer, MAX_INPUT_BYTES};

use super::generate::{DEMO_MODEL, DEMO_NAME};

#[derive(Args)]
#[command(about = "Print the token ids (and pieces) of a text, as llama-tokenize does")]
pub struct TokenizeArgs {
    /// The model (GGUF) whose tokenizer to use; default: the demo model embedded in the binary
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// The text
    #[arg(short, long, required_unless_present = "file", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the text from a file (- for standard input)
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print the ids only, as a list: [1, 2, 3]
    #[arg(long, conflicts_with = "pieces")]
    ids: bool,
    /// Print the pieces only, one per line
    #[arg(long)]
    pieces: bool,
    /// Treat special tokens written in the text as plain text
    #[arg(long)]
    no_special: bool,
}

pub fn run(args: TokenizeArgs) -> Result<()> {
    let text = match (&args.prompt, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => read_text(path)?,
        (None, None) => bail!("give -p TEXT or -f FILE"),
    };
    let file = match &args.model {
        Some(path) => ModelFile::open(path)?,
        None => ModelFile::from_bytes(DEMO_NAME, DEMO_MODEL.to_vec())?,
    };
    if file.get("tokenizer.ggml.model").is_none() {
        bail!("{}: the file has no tokenizer", file.name());
    }
    let tokenizer = Tokenizer::from_model_file(&file)?;
    super::warn_missing_bytes(&tokenizer);
    let ids = tokenizer.encode(&text, !args.no_special)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "[{}]", list.join(", "))?;
    } else {
        for &id in &ids {
            let piece = shown(tokenizer.piece(id).unwrap_or_default());
            if args.pieces {
                writeln!(out, "{piece}")?;
            } else {
                writeln!(out, "{id:>6} -> '{piece}'")?;
            }
        }
    }
    out.flush()?;
    eprintln!("{} tokens", ids.len());
    Ok(())
}

/// A piece as text, with newlines, tabs, quotes, backslashes and control characters escaped; bytes that are not (yet) a whole character
/// as `\xNN`, as llama-tokenize's pieces of a split emoji are not text either.
fn shown(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The text of `path` (or standard input for `-`), at most what the tokenizer takes.
fn read_text(path: &std::path::Path) -> Result<String> {
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        // Bounded, so a FIFO or /dev/zero cannot make it read without end.
        std::fs::File::open(path).and_then(|file| file.take(limit).read_to_end(&mut bytes))
    }
    .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > MAX_INPUT_BYTES {
        bail!(
            "{}: more than {MAX_INPUT_BYTES} bytes, the most the tokenizer takes",
            path.display()
        );
    }
    String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", path.display()))
}
