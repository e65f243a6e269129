//! `latte info [FILE [--mmproj MMPROJ]] [--json]`: the metadata, the tensor table, totals per name
//! prefix and, for a file with expert groups, each group's byte range. With `--mmproj` (a llama.cpp
//! text model and its vision projector), both files, and whether the projector belongs to the text
//! model. Without FILE (or with `--demo`), the demo
//! model embedded in the binary; `--write-demo PATH` saves that model as a file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use latte::gguf::{is_padding_tensor, GgufFile, MetadataArray, MetadataValue};
use latte::model::expert_groups::{GroupLayout, GroupRange};
use latte::model::projector;
use serde_json::{json, Value};

use latte::output::{write_output, Content};

use super::generate::{DEMO_MODEL, DEMO_NAME};
use super::human_bytes;

impl InfoArgs {
    /// The file shown, as messages name it.
    fn name(&self) -> String {
        self.file
            .as_ref()
            .map_or(DEMO_NAME.to_string(), |path| path.display().to_string())
    }
}

/// Show what a GGUF file holds (without FILE: the demo model embedded in the binary).
#[derive(Args)]
pub struct InfoArgs {
    /// The GGUF file [default: the embedded demo model].
    file: Option<PathBuf>,
    /// The vision projector (llama.cpp's mmproj-*.gguf) of FILE, shown after it and checked to
    /// belong to it.
    #[arg(long, value_name = "MMPROJ", requires = "file")]
    mmproj: Option<PathBuf>,
    /// Show the embedded demo model (the same as giving no FILE).
    #[arg(long, conflicts_with = "file")]
    demo: bool,
    /// Write the embedded demo model to PATH (a GGUF file any command takes with -m) and exit.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["file", "json"])]
    write_demo: Option<PathBuf>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

/// `println!` into a `String` (formatting into memory cannot fail).
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Array elements shown in the text form (the JSON form has them all).
const SHOWN_ELEMENTS: usize = 8;

pub fn run(args: InfoArgs) -> Result<()> {
    if let Some(path) = &args.write_demo {
        write_output(path, DEMO_MODEL, Content::Binary("GGUF"))?;
        eprintln!(
            "latte info: wrote the demo model ({}) to {}",
            human_bytes(DEMO_MODEL.len() as u64),
            path.display()
        );
        return Ok(());
    }
    let file = match &args.file {
        Some(path) => GgufFile::open(path)?,
        None => GgufFile::from_bytes(DEMO_MODEL.to_vec())?,
    };
    let mut shown = vec![(args.name(), file)];
    if let (Some(text), Some(mmproj)) = (&args.file, &args.mmproj) {
        // One line naming both files when the projector is not the text model's.
        projector::open_with_projector(text, mmproj)?;
        shown.push((mmproj.display().to_string(), GgufFile::open(mmproj)?));
    }
    let mut reports = Vec::new();
    for (name, file) in &shown {
        let groups = match GroupLayout::from_file(file)
            .and_then(|layout| layout.map(|l| l.ranges(file.tensor_infos())).transpose())
        {
            Ok(groups) => groups.unwrap_or_default(),
            Err(error) => Err(error).with_context(|| name.clone())?,
        };
        reports.push(if args.json {
            Report::Json(as_json(name, file, &groups))
        } else {
            Report::Text(render_text(name, file, &groups))
        });
    }
    let text = match reports.as_slice() {
        [Report::Json(one)] => serde_json::to_string_pretty(one)? + "\n",
        [Report::Json(model), Report::Json(mmproj)] => {
            serde_json::to_string_pretty(&json!({ "model": model, "mmproj": mmproj }))? + "\n"
        }
        _ => {
            let texts: Vec<&str> = reports
                .iter()
                .filter_map(|r| match r {
                    Report::Text(t) => Some(t.as_str()),
                    Report::Json(_) => None,
                })
                .collect();
            texts.join("\n")
        }
    };
    write_stdout(&text)
}

enum Report {
    Text(String),
    Json(Value),
}

/// Writes to stdout; a closed pipe (`latte info ... | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}

/// The first dot-separated component of a tensor name (`blk`, `token_embd`, `v`, `flow`).
fn prefix(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Tensor count and bytes per name prefix, sorted by prefix.
fn prefix_totals(file: &GgufFile) -> BTreeMap<&str, (usize, u64)> {
    let mut totals = BTreeMap::new();
    for info in file.tensor_infos() {
        let entry = totals.entry(prefix(&info.name)).or_insert((0, 0));
        entry.0 += 1;
        entry.1 += info.n_bytes;
    }
    totals
}

fn render_text(name: &str, file: &GgufFile, groups: &[GroupRange]) -> String {
    let mut out = String::new();
    line!(
        out,
        "{}: GGUF v{}, {}, alignment {}, tensor data at byte {}",
        name,
        file.version(),
        human_bytes(file.bytes().len() as u64),
        file.alignment(),
        file.data_offset()
    );

    line!(out, "\nmetadata: {} keys", file.metadata().len());
    let key_width = file
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (key, value) in file.metadata() {
        line!(out, "  {key:key_width$}  {}", describe(value));
    }

    let infos = file.tensor_infos();
    let padding = infos.iter().filter(|t| is_padding_tensor(&t.name)).count();
    line!(
        out,
        "\ntensors: {} ({padding} of them zero padding before 16 KiB group boundaries)",
        infos.len()
    );
    let name_width = infos.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    line!(
        out,
        "  {:>5}  {:name_width$}  {:7}  {:24}  {:>12}  {:>12}",
        "#",
        "name",
        "type",
        "shape",
        "bytes",
        "offset"
    );
    for (index, info) in infos.iter().enumerate() {
        line!(
            out,
            "  {index:>5}  {:name_width$}  {:7}  {:24}  {:>12}  {:>12}",
            info.name,
            info.ty.name(),
            format!("{:?}", info.dims),
            info.n_bytes,
            info.offset
        );
    }

    line!(out, "\ntotals by prefix:");
    for (prefix, (count, bytes)) in prefix_totals(file) {
        line!(
            out,
            "  {prefix:16}  {count:>6} tensors  {:>12}",
            human_bytes(bytes)
        );
    }

    if !groups.is_empty() {
        line!(out, "\nexpert groups: {}", groups.len());
        for group in groups {
            line!(
                out,
                "  group {}  layers {:>3}..{:<3}  bytes {:>12}..{:<12}  {:>12}  {} tensors",
                group.group,
                group.layers.start,
                group.layers.end,
                group.bytes.start,
                group.bytes.end,
                human_bytes(group.bytes.end - group.bytes.start),
                group.tensors.len()
            );
        }
    }
    out
}

fn as_json(name: &str, file: &GgufFile, groups: &[GroupRange]) -> Value {
    let metadata: serde_json::Map<String, Value> = file
        .metadata()
        .iter()
        .map(|(key, value)| (key.clone(), value_json(value)))
        .collect();
    let tensors: Vec<Value> = file
        .tensor_infos()
        .iter()
        .map(|t| {
            json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "bytes": t.n_bytes, "offset": t.offset})
        })
        .collect();
    let totals: Vec<Value> = prefix_totals(file)
        .into_iter()
        .map(|(prefix, (count, bytes))| json!({"prefix": prefix, "tensors": count, "bytes": bytes}))
        .collect();
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "group": g.group,
                "layers": [g.layers.start, g.layers.end],
                "byte_range": [g.bytes.start, g.bytes.end],
                "bytes": g.bytes.end - g.bytes.start,
                "tensors": g.tensors.len(),
            })
        })
        .collect();
    json!({
        "file": name,
        "version": file.version(),
        "file_bytes": file.bytes().len(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata": metadata,
        "tensors": tensors,
        "prefix_totals": totals,
        "expert_groups": groups,
    })
}

fn value_json(value: &MetadataValue) -> Value {
    match value {
        MetadataValue::U8(v) => json!(v),
        MetadataValue::I8(v) => json!(v),
        MetadataValue::U16(v) => json!(v),
        MetadataValue::I16(v) => json!(v),
        MetadataValue::U32(v) => json!(v),
        MetadataValue::I32(v) => json!(v),
        MetadataValue::F32(v) => json!(v),
        MetadataValue::Bool(v) => json!(v),
        MetadataValue::String(v) => json!(v),
        MetadataValue::U64(v) => json!(v),
        MetadataValue::I64(v) => json!(v),
        MetadataValue::F64(v) => json!(v),
        MetadataValue::Array(array) => Value::Array(
            (0..array.len())
                .filter_map(|i| array.get(i))
                .map(|v| value_json(&v))
                .collect(),
        ),
    }
}

/// A value as one line: scalars as they are, strings quoted and cut, arrays as `[type; n] [first...]`.
fn describe(value: &MetadataValue) -> String {
    match value {
        MetadataValue::String(s) => quote(s),
        MetadataValue::Array(array) => describe_array(array),
        scalar => value_json(scalar).to_string(),
    }
}

fn describe_array(array: &MetadataArray) -> String {
    let shown: Vec<String> = (0..array.len().min(SHOWN_ELEMENTS))
        .filter_map(|i| array.get(i))
        .map(|v| describe(&v))
        .collect();
    let more = if array.len() > SHOWN_ELEMENTS {
        ", ..."
    } else {
        ""
    };
    format!(
        "[{}; {}] [{}{more}]",
        array.elem_type().name(),
        array.len(),
        shown.join(", ")
    )
}

/// A string quoted with escapes, cut to 60 characters (a chat template is kilobytes long).
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    let escaped: String = s.escape_debug().collect();
    if escaped.chars().count() <= MAX {
        format!("\"{escaped}\"")
    } else {
        let cut: String = escaped.chars().take(MAX).collect();
        format!("\"{cut}\"... ({} bytes)", s.len())
    }
}
