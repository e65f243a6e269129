//! Re-quantizing a GGUF file (`latte quantize`), the way `llama-quantize` does it without an
//! importance matrix: every tensor of two or more dimensions becomes the target type (or the type of the
//! first `--tensor-type` rule that matches its name), 1-D tensors (norms, biases) become F32, and a
//! tensor whose rows do not fit the type's block falls back to a type whose block fits.
//!
//! The output is written through [`GgufWriter`], so a failure leaves no file behind; expert groups keep
//! their 16 KiB-aligned byte ranges. This module decides types and moves bytes; the formats themselves
//! are `crate::quant`'s.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use regex::Regex;
use thiserror::Error;

use super::preset::{LayerCounts, Mixture};
use crate::dtype::TensorType;
use crate::gguf::{
    is_padding_tensor, GgufBuilder, GgufError, GgufFile, MetadataValue, TensorInfo, WriteError,
    ALIGNMENT_KEY,
};
use crate::model::expert_groups::{GroupLayout, GroupLayoutError, GROUP_ALIGNMENT};
use crate::quant::{self, QuantError};

#[derive(Debug, Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Read(#[from] GgufError),
    #[error("{}", cause.at(path))]
    Write { path: PathBuf, cause: WriteError },
    #[error("{path}: {cause}")]
    Layout {
        path: PathBuf,
        cause: GroupLayoutError,
    },
    #[error("{path}: tensor '{name}': {cause}")]
    Quant {
        path: PathBuf,
        name: String,
        cause: QuantError,
    },
    #[error("{path}: tensor '{name}' has type {ty}, which latte cannot convert")]
    Unconvertible {
        path: PathBuf,
        name: String,
        ty: TensorType,
    },
    #[error("type {0} cannot be a quantization target (choose one of {1})")]
    BadTarget(TensorType, String),
    #[error("'{0}' is not a tensor-type rule: expected REGEX=TYPE, e.g. 'ffn_down=q6_k'")]
    BadRule(String),
    #[error("bad regex in tensor-type rule '{rule}': {cause}")]
    BadRegex { rule: String, cause: regex::Error },
    #[error("'{0}' is not a tensor type (expected one of {1})")]
    UnknownType(String, String),
    #[error("'{0}' is neither a llama-quantize type nor a tensor type (expected one of {1})")]
    UnknownPreset(String, String),
    #[error("{0} is a llama-quantize type that needs Q2_K or Q3_K, which latte has no kernels for (choose one of {1})")]
    UnsupportedPreset(String, String),
    #[error("input and output are the same file: {0}")]
    SameFile(PathBuf),
}

/// `REGEX=TYPE`: tensors whose name matches REGEX (anywhere in the name) become TYPE.
#[derive(Clone, Debug)]
pub struct TensorTypeRule {
    pub pattern: Regex,
    pub ty: TensorType,
}

impl FromStr for TensorTypeRule {
    type Err = QuantizeError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let (pattern, ty) = rule
            .rsplit_once('=')
            .ok_or_else(|| QuantizeError::BadRule(rule.into()))?;
        if pattern.is_empty() {
            return Err(QuantizeError::BadRule(rule.into()));
        }
        let pattern = Regex::new(pattern).map_err(|source| QuantizeError::BadRegex {
            rule: rule.into(),
            cause: source,
        })?;
        Ok(TensorTypeRule {
            pattern,
            ty: parse_target_type(ty)?,
        })
    }
}

/// A target type by name (`q4_k`, `F16`), one of the computable types.
pub fn parse_target_type(name: &str) -> Result<TensorType, QuantizeError> {
    let names = || {
        TensorType::COMPUTABLE
            .iter()
            .map(|t| t.name().to_lowercase())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ty = TensorType::from_name(name)
        .ok_or_else(|| QuantizeError::UnknownType(name.into(), names()))?;
    if !ty.is_computable() {
        return Err(QuantizeError::BadTarget(ty, names()));
    }
    Ok(ty)
}

const KEY_FILE_TYPE: &str = "general.file_type";
const KEY_QUANTIZATION_VERSION: &str = "general.quantization_version";
/// ggml's current quantization format version (`GGML_QNT_VERSION`).
const QUANTIZATION_VERSION: u32 = 2;

/// f32 elements converted per chunk (16 MiB): bounds memory whatever the tensor size.
const CHUNK_ELEMENTS: usize = 4 << 20;

/// What to quantize to.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// The type of weights no rule singles out.
    pub target: TensorType,
    /// `--tensor-type` rules, before any mixture rule.
    pub rules: Vec<TensorTypeRule>,
    /// llama-quantize's per-tensor rules (Q4_K_M …); `None`: every weight is `target`.
    pub mixture: Option<Mixture>,
    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub file_type: u32,
}

impl QuantizeOptions {
    /// `--type`: a tensor type for every weight (llama-quantize's `--pure`), or a mixture name
    /// ending in _S / _M.
    pub fn parse(target: &str, rules: &[String]) -> Result<Self, QuantizeError> {
        let rules = parse_rules(rules)?;
        match parse_target_type(target) {
            Ok(ty) => Ok(QuantizeOptions {
                target: ty,
                rules,
                mixture: None,
                file_type: llama_file_type(ty),
            }),
            Err(QuantizeError::UnknownType(..)) => {
                Self::preset(target, &[]).map(|p| QuantizeOptions { rules, ..p })
            }
            Err(e) => Err(e),
        }
    }

    /// llama-quantize's TYPE argument: a mixture such as Q4_K_M, or a plain type with
    /// llama-quantize's output rule (see `preset`).
    pub fn preset(name: &str, rules: &[String]) -> Result<Self, QuantizeError> {
        let (mixture, file_type) = Mixture::from_name(name).map_err(|known| {
            if known {
                QuantizeError::UnsupportedPreset(name.to_ascii_uppercase(), Mixture::names())
            } else {
                QuantizeError::UnknownPreset(name.into(), Mixture::names())
            }
        })?;
        Ok(QuantizeOptions {
            target: mixture.base(),
            rules: parse_rules(rules)?,
            mixture: Some(mixture),
            file_type,
        })
    }
}

fn parse_rules(rules: &[String]) -> Result<Vec<TensorTypeRule>, QuantizeError> {
    rules.iter().map(|rule| rule.parse()).collect()
}

/// The type chosen for one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub source: TensorType,
    /// What the options asked for.
    pub requested: TensorType,
    /// What the tensor gets (differs from `requested` after a fallback).
    pub target: TensorType,
}

impl TensorPlan {
    pub fn fell_back(&self) -> bool {
        self.requested != self.target
    }
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct QuantizeReport {
    pub plans: Vec<TensorPlan>,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// The type a row of `row_len` elements gets when `wanted`'s block does not divide it: llama-quantize's
/// fallbacks (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0), then F16 when even that block does not fit.
pub fn fallback_type(wanted: TensorType, row_len: u64) -> TensorType {
    if row_len.is_multiple_of(wanted.block_size() as u64) {
        return wanted;
    }
    let next = match wanted {
        TensorType::Q4_K => TensorType::Q5_0,
        TensorType::Q5_K => TensorType::Q5_1,
        TensorType::Q6_K => TensorType::Q8_0,
        _ => TensorType::F16,
    };
    if row_len.is_multiple_of(next.block_size() as u64) {
        next
    } else {
        TensorType::F16
    }
}

/// The type one tensor gets under `options`. Integer tensors (positions, ids) are not weights: they
/// are copied as they are.
pub fn plan_tensor(
    info: &TensorInfo,
    options: &QuantizeOptions,
    layers: &LayerCounts,
) -> TensorPlan {
    let is_integer = matches!(
        info.ty,
        TensorType::I8 | TensorType::I16 | TensorType::I32 | TensorType::I64
    );
    let requested = if is_integer {
        info.ty
    } else if info.dims.len() < 2 {
        TensorType::F32
    } else {
        options
            .rules
            .iter()
            .find(|rule| rule.pattern.is_match(&info.name))
            .map(|rule| rule.ty)
            .or_else(|| {
                let mixture = options.mixture?;
                Some(mixture.type_of(&info.name, info.dims[0], layers))
            })
            .unwrap_or(options.target)
    };
    TensorPlan {
        name: info.name.clone(),
        source: info.ty,
        requested,
        target: fallback_type(requested, info.dims[0]),
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file mostly of type `ty`.
pub fn llama_file_type(ty: TensorType) -> u32 {
    match ty {
        TensorType::F32 => 0,
        TensorType::F16 => 1,
        TensorType::Q4_0 => 2,
        TensorType::Q4_1 => 3,
        TensorType::Q8_0 => 7,
        TensorType::Q5_0 => 8,
        TensorType::Q5_1 => 9,
        TensorType::Q4_K => 14, // MOSTLY_Q4_K_S: every tensor Q4_K, no mix
        TensorType::Q5_K => 16, // MOSTLY_Q5_K_S
        TensorType::Q6_K => 18,
        TensorType::BF16 => 32,
        _ => 0,
    }
}

/// Re-quantizes `input` into `output` (written atomically) and reports what each tensor became.
pub fn quantize_gguf(
    input: &Path,
    output: &Path,
    options: &QuantizeOptions,
) -> Result<QuantizeReport, QuantizeError> {
    if same_file(input, output) {
        return Err(QuantizeError::SameFile(output.to_path_buf()));
    }
    let file = GgufFile::open(input)?;
    let metadata: Vec<(String, MetadataValue)> = file
        .metadata()
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    write_requantized(&[(input, &file)], metadata, output, options)
}

/// Writes the tensors of `sources` (in order; their names disjoint), each re-typed by `options`,
/// with `metadata` (alignment, file type and quantization version are set here), into `output`
/// (written atomically). The first source's expert groups keep their 16 KiB boundaries.
pub fn write_requantized(
    sources: &[(&Path, &GgufFile)],
    metadata: Vec<(String, MetadataValue)>,
    output: &Path,
    options: &QuantizeOptions,
) -> Result<QuantizeReport, QuantizeError> {
    for (input, _) in sources {
        if same_file(input, output) {
            return Err(QuantizeError::SameFile(output.to_path_buf()));
        }
    }
    let Some(&(first_path, first)) = sources.first() else {
        return Ok(QuantizeReport {
            plans: Vec::new(),
            input_bytes: 0,
            output_bytes: 0,
        });
    };
    let group_starts = group_starts(first).map_err(|source| QuantizeError::Layout {
        path: first_path.to_path_buf(),
        cause: source,
    })?;
    // The writer's gap padding is layout, not data: it is laid out afresh for the output.
    let infos: Vec<(&Path, &GgufFile, &TensorInfo)> = sources
        .iter()
        .flat_map(|&(path, file)| {
            file.tensor_infos()
                .iter()
                .filter(|info| !is_padding_tensor(&info.name))
                .map(move |info| (path, file, info))
        })
        .collect();
    let layers = LayerCounts::of(infos.iter().map(|(_, _, info)| info.name.as_str()));
    let plans: Vec<TensorPlan> = infos
        .iter()
        .map(|(_, _, info)| plan_tensor(info, options, &layers))
        .collect();
    for ((input, _, _), plan) in infos.iter().zip(&plans) {
        if plan.source != plan.target && !plan.source.is_computable() {
            return Err(QuantizeError::Unconvertible {
                path: input.to_path_buf(),
                name: plan.name.clone(),
                ty: plan.source,
            });
        }
    }

    let write_error = |source| QuantizeError::Write {
        path: output.to_path_buf(),
        cause: source,
    };
    let mut builder = GgufBuilder::new();
    builder
        .set_alignment(first.alignment() as u32)
        .map_err(write_error)?;
    for (key, value) in metadata {
        if !matches!(
            key.as_str(),
            ALIGNMENT_KEY | KEY_FILE_TYPE | KEY_QUANTIZATION_VERSION
        ) {
            builder.push_metadata(key, value).map_err(write_error)?;
        }
    }
    let file_type = MetadataValue::U32(options.file_type);
    builder
        .push_metadata(KEY_FILE_TYPE, file_type)
        .map_err(write_error)?;
    if plans.iter().any(|p| p.target.is_quantized()) {
        let version = MetadataValue::U32(QUANTIZATION_VERSION);
        builder
            .push_metadata(KEY_QUANTIZATION_VERSION, version)
            .map_err(write_error)?;
    }
    for ((_, _, info), plan) in infos.iter().zip(&plans) {
        if group_starts.contains(&info.name) {
            builder.push_tensor_on_boundary(&info.name, plan.target, &info.dims, GROUP_ALIGNMENT)
        } else {
            builder.push_tensor(&info.name, plan.target, &info.dims)
        }
        .map_err(write_error)?;
    }

    let mut out = builder.create(output).map_err(write_error)?;
    let mut rows = Vec::new();
    let mut converted = Vec::new();
    for ((input, file, _), plan) in infos.iter().zip(&plans) {
        let view = file
            .tensor(&plan.name)
            .expect("planned from the file's own tensor list");
        if plan.source == plan.target {
            out.write_tensor(&plan.name, view.bytes())
                .map_err(write_error)?;
            continue;
        }
        let quant_error = |source| QuantizeError::Quant {
            path: input.to_path_buf(),
            name: plan.name.clone(),
            cause: source,
        };
        // Convert a bounded number of rows at a time, so memory stays near CHUNK_ELEMENTS f32s even
        // for a 150k-row embedding.
        let row_len = view.row_len();
        let in_row_bytes = view.row_bytes();
        let out_row_bytes = plan
            .target
            .row_bytes(row_len as u64)
            .expect("fallback fits") as usize;
        let rows_per_chunk = (CHUNK_ELEMENTS / row_len.max(1)).max(1);
        for chunk in view.bytes().chunks(in_row_bytes * rows_per_chunk) {
            let n_rows = chunk.len() / in_row_bytes;
            rows.resize(n_rows * row_len, 0.0f32);
            quant::dequantize(plan.source, chunk, &mut rows).map_err(quant_error)?;
            converted.resize(n_rows * out_row_bytes, 0u8);
            converted
                .par_chunks_mut(out_row_bytes)
                .zip(rows.par_chunks(row_len))
                .try_for_each(|(dst, src)| quant::quantize(plan.target, src, dst))
                .map_err(quant_error)?;
            out.write_tensor_chunk(&plan.name, &converted)
                .map_err(write_error)?;
        }
    }
    let output_bytes = out.finish().map_err(write_error)?;
    Ok(QuantizeReport {
        plans,
        input_bytes: sources.iter().map(|(_, f)| f.bytes().len() as u64).sum(),
        output_bytes,
    })
}

/// Names of the tensors that open an expert group: they start on a 16 KiB boundary.
fn group_starts(file: &GgufFile) -> Result<Vec<String>, GroupLayoutError> {
    let Some(layout) = GroupLayout::from_file(file)? else {
        return Ok(Vec::new());
    };
    Ok(layout
        .ranges(file.tensor_infos())?
        .iter()
        .filter_map(|range| range.tensors.first())
        .map(|&index| file.tensor_infos()[index].name.clone())
        .collect())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, dims: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ty: TensorType::F16,
            dims: dims.to_vec(),
            offset: 0,
            n_bytes: 0,
        }
    }

    #[test]
    fn fallbacks_follow_llama_quantize() {
        assert_eq!(fallback_type(TensorType::Q4_K, 512), TensorType::Q4_K);
        assert_eq!(fallback_type(TensorType::Q4_K, 96), TensorType::Q5_0);
        assert_eq!(fallback_type(TensorType::Q5_K, 96), TensorType::Q5_1);
        assert_eq!(fallback_type(TensorType::Q6_K, 96), TensorType::Q8_0);
        assert_eq!(fallback_type(TensorType::Q6_K, 100), TensorType::F16);
        assert_eq!(fallback_type(TensorType::Q4_0, 100), TensorType::F16);
        assert_eq!(fallback_type(TensorType::BF16, 7), TensorType::BF16);
    }

    #[test]
    fn plans_keep_vectors_f32_and_apply_rules_in_order() {
        let options =
            QuantizeOptions::parse("q4_0", &["ffn_down=q6_k".into(), "ffn=q8_0".into()]).unwrap();
        let layers = LayerCounts::default();
        let plan = |name, dims: &[u64]| plan_tensor(&info(name, dims), &options, &layers).target;
        assert_eq!(plan("blk.0.attn_norm.weight", &[1536]), TensorType::F32);
        let positions = TensorInfo {
            ty: TensorType::I32,
            ..info("pos", &[64, 2])
        };
        assert_eq!(
            plan_tensor(&positions, &options, &layers).target,
            TensorType::I32
        );
        assert_eq!(plan("blk.0.attn_q.weight", &[1536, 1536]), TensorType::Q4_0);
        assert_eq!(
            plan("blk.0.ffn_down.weight", &[8960, 1536]),
            TensorType::Q6_K
        );
        assert_eq!(plan("blk.0.ffn_up.weight", &[1536, 8960]), TensorType::Q8_0);
        let fell = plan_tensor(&info("blk.0.ffn_down.weight", &[96, 4]), &options, &layers);
        assert!(fell.fell_back());
        assert_eq!(fell.target, TensorType::Q8_0);
    }

    #[test]
    fn rules_and_types_parse_with_clear_errors() {
        assert!("=q4_0".parse::<TensorTypeRule>().is_err());
        assert!("attn".parse::<TensorTypeRule>().is_err());
        assert!(matches!(
            "attn(=q4_0".parse::<TensorTypeRule>(),
            Err(QuantizeError::BadRegex { .. })
        ));
        assert!(matches!(
            parse_target_type("q9_9"),
            Err(QuantizeError::UnknownType(..))
        ));
        assert!(matches!(
            parse_target_type("q2_k"),
            Err(QuantizeError::BadTarget(..))
        ));
        assert_eq!(parse_target_type("Q4_K").unwrap(), TensorType::Q4_K);
        // `--type` takes a plain type as is and a mixture by its _S / _M name.
        let pure = QuantizeOptions::parse("q4_k", &[]).unwrap();
        assert_eq!((pure.mixture, pure.file_type), (None, 14));
        let mixed = QuantizeOptions::parse("Q4_K_M", &[]).unwrap();
        assert_eq!((mixed.mixture, mixed.file_type), (Some(Mixture::Q4KM), 15));
        assert!(matches!(
            QuantizeOptions::preset("Q3_K_M", &[]),
            Err(QuantizeError::UnsupportedPreset(..))
        ));
        assert!(matches!(
            QuantizeOptions::preset("Q9", &[]),
            Err(QuantizeError::UnknownPreset(..))
        ));
    }

    /// Rules first, then the mixture, then the fallback.
    #[test]
    fn a_mixture_applies_after_the_rules() {
        let options = QuantizeOptions::preset("q4_k_m", &["blk\\.0\\.attn_v=q8_0".into()]).unwrap();
        let layers = LayerCounts::of(["blk.0.x", "blk.27.x"]);
        let plan = |name, dims: &[u64]| plan_tensor(&info(name, dims), &options, &layers).target;
        assert_eq!(plan("blk.0.attn_v.weight", &[1536, 256]), TensorType::Q8_0);
        assert_eq!(plan("blk.1.attn_v.weight", &[1536, 256]), TensorType::Q6_K);
        assert_eq!(plan("blk.3.attn_v.weight", &[1536, 256]), TensorType::Q4_K);
        assert_eq!(plan("token_embd.weight", &[1536, 151936]), TensorType::Q6_K);
        // Rows of 96 fit no 256-block: Q6_K falls back to Q8_0.
        assert_eq!(plan("blk.1.ffn_down.weight", &[96, 64]), TensorType::Q8_0);
        assert_eq!(plan("blk.1.ffn_norm.weight", &[1536]), TensorType::F32);
    }
}
