//! The DC-AE decoder's configuration: diffusers' `AutoencoderDC` config JSON, stored verbatim under
//! [`KEY_CONFIG_JSON`], parsed and validated into the per-stage plan the decoder is built from.
//!
//! Keys absent from the JSON take diffusers' defaults (as `ConfigMixin` does), so a config saved by
//! any diffusers version reads the same here. Every present key must have the right JSON type and a
//! value diffusers' `Decoder` accepts; anything else is a [`DcaeConfigError`] naming the key. Keys
//! only the encoder reads are ignored. This module parses; it must not touch tensors.

use serde_json::Value;
use thiserror::Error;

/// The GGUF key holding the diffusers config (written by `latte convert`).
pub const KEY_CONFIG_JSON: &str = "latte.dcae.config_json";

/// A config the decoder cannot be built from; `key` is the JSON key at fault.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DcaeConfigError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("the config is not a JSON object")]
    NotAnObject,
    #[error("'{key}' should be {expected}")]
    Type { key: String, expected: &'static str },
    #[error("'{key}': unknown value '{value}' (known: {known})")]
    Unknown {
        key: String,
        value: String,
        known: &'static str,
    },
    #[error("'{key}': {reason}")]
    Invalid { key: String, reason: String },
}

/// The building block of a decoder stage (`decoder_block_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    ResBlock,
    EfficientVitBlock,
}

/// A stage's normalisation (`decoder_norm_types`): RMSNorm over channels, or eval-mode BatchNorm2d.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormType {
    RmsNorm,
    BatchNorm,
}

/// diffusers' `get_activation` table (plus `null`: `nn.Identity`, which ResBlock allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Silu,
    Mish,
    /// `nn.GELU()`: the exact erf form.
    Gelu,
    Relu,
}

/// How a stage doubles the resolution (`upsample_block_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsampleType {
    /// Nearest ×2, then a 3×3 convolution.
    Interpolate,
    /// A 3×3 convolution to 4× the channels, then pixel shuffle.
    PixelShuffle,
}

/// One decoder stage `i` (diffusers' `up_blocks[i]`), in config order (stage 0 is full resolution).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageConfig {
    pub channels: usize,
    pub layers: usize,
    pub block_type: BlockType,
    pub norm: NormType,
    pub activation: Activation,
    /// Kernel sizes of the EfficientViT block's multi-scale q/k/v branches.
    pub qkv_multiscales: Vec<usize>,
}

/// The decoder half of an `AutoencoderDC` config.
#[derive(Clone, Debug, PartialEq)]
pub struct DcaeConfig {
    /// Image channels (`in_channels`, 3 for RGB).
    pub image_channels: usize,
    pub latent_channels: usize,
    pub attention_head_dim: usize,
    pub stages: Vec<StageConfig>,
    pub upsample: UpsampleType,
    pub in_shortcut: bool,
    pub conv_activation: Activation,
    pub scaling_factor: f32,
}

impl DcaeConfig {
    /// The config a model file stores under [`KEY_CONFIG_JSON`]; errors name the file.
    pub fn from_file(file: &crate::model::ModelFile) -> Result<Self, crate::model::ModelError> {
        let json = file.str(KEY_CONFIG_JSON)?;
        DcaeConfig::from_json(json).map_err(|cause| crate::model::ModelError::DcaeConfig {
            file: file.name().into(),
            cause,
        })
    }

    /// Parses and validates `json` (the text of a diffusers `config.json`).
    pub fn from_json(json: &str) -> Result<Self, DcaeConfigError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| DcaeConfigError::Json(e.to_string()))?;
        let object = value.as_object().ok_or(DcaeConfigError::NotAnObject)?;
        let get = |key: &str| object.get(key).filter(|v| !v.is_null());

        let image_channels = positive(get("in_channels"), "in_channels", 3)?;
        let latent_channels = positive(get("latent_channels"), "latent_channels", 32)?;
        let attention_head_dim = positive(get("attention_head_dim"), "attention_head_dim", 32)?;

        let channels = match get("decoder_block_out_channels") {
            None => vec![128, 256, 512, 512, 1024, 1024],
            Some(v) => list(v, "decoder_block_out_channels", |x| {
                as_positive(x, "decoder_block_out_channels")
            })?,
        };
        let n = channels.len();
        if n == 0 {
            return Err(invalid("decoder_block_out_channels", "no stages"));
        }
        let layers = match get("decoder_layers_per_block") {
            None => vec![3; n],
            Some(v) => list(v, "decoder_layers_per_block", |x| {
                as_count(x, "decoder_layers_per_block")
            })?,
        };
        let qkv_multiscales = match get("decoder_qkv_multiscales") {
            None => {
                let mut d = vec![vec![]; n.min(3)];
                d.resize(n, vec![5]);
                d
            }
            Some(v) => list(v, "decoder_qkv_multiscales", |x| {
                list(x, "decoder_qkv_multiscales", |k| {
                    kernel_size(k, "decoder_qkv_multiscales")
                })
            })?,
        };
        let block_types = per_stage(
            object.get("decoder_block_types"),
            "decoder_block_types",
            n,
            BlockType::ResBlock,
            block_type,
        )?;
        let norms = per_stage(
            object.get("decoder_norm_types"),
            "decoder_norm_types",
            n,
            NormType::RmsNorm,
            norm_type,
        )?;
        let activations = per_stage(
            object.get("decoder_act_fns"),
            "decoder_act_fns",
            n,
            Activation::Silu,
            |v, key| match v {
                Value::Null => Ok(Activation::Identity),
                v => activation(v, key),
            },
        )?;
        for (key, len) in [
            ("decoder_layers_per_block", layers.len()),
            ("decoder_qkv_multiscales", qkv_multiscales.len()),
        ] {
            if len != n {
                return Err(invalid(
                    key,
                    format!("has {len} entries for {n} stages (decoder_block_out_channels)"),
                ));
            }
        }

        let upsample = match get("upsample_block_type") {
            None => UpsampleType::PixelShuffle,
            Some(v) => match as_str(v, "upsample_block_type")? {
                "interpolate" => UpsampleType::Interpolate,
                // diffusers builds a pixel-shuffle block for any other string.
                "pixel_shuffle" => UpsampleType::PixelShuffle,
                other => {
                    return Err(DcaeConfigError::Unknown {
                        key: "upsample_block_type".into(),
                        value: other.into(),
                        known: "interpolate, pixel_shuffle",
                    })
                }
            },
        };
        let in_shortcut = match get("decoder_in_shortcut") {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| DcaeConfigError::Type {
                key: "decoder_in_shortcut".into(),
                expected: "a boolean",
            })?,
        };
        let conv_activation = match get("decoder_conv_act_fn") {
            None => Activation::Relu,
            Some(v) => activation(v, "decoder_conv_act_fn")?,
        };
        let scaling_factor = match get("scaling_factor") {
            None => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0 && (*x as f32).is_normal())
                .ok_or_else(|| DcaeConfigError::Type {
                    key: "scaling_factor".into(),
                    expected: "a positive finite number",
                })? as f32,
        };

        let stages: Vec<StageConfig> = (0..n)
            .map(|i| StageConfig {
                channels: channels[i],
                layers: layers[i],
                block_type: block_types[i],
                norm: norms[i],
                activation: activations[i],
                qkv_multiscales: qkv_multiscales[i].clone(),
            })
            .collect();
        let too_narrow = |s: &&StageConfig| {
            s.block_type == BlockType::EfficientVitBlock
                && s.layers > 0
                && s.channels < attention_head_dim
        };
        if let Some(stage) = stages.iter().find(too_narrow) {
            return Err(invalid(
                "attention_head_dim",
                format!(
                    "{attention_head_dim} is wider than a {}-channel EfficientViT stage",
                    stage.channels
                ),
            ));
        }
        Ok(DcaeConfig {
            image_channels,
            latent_channels,
            attention_head_dim,
            stages,
            upsample,
            in_shortcut,
            conv_activation,
            scaling_factor,
        })
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> DcaeConfigError {
    DcaeConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Channel counts and sizes above this are not a real model (and would overflow buffer sizes).
const MAX_DIM: u64 = 1 << 20;

fn as_count(v: &Value, key: &str) -> Result<usize, DcaeConfigError> {
    v.as_u64()
        .filter(|&x| x <= MAX_DIM)
        .map(|x| x as usize)
        .ok_or_else(|| DcaeConfigError::Type {
            key: key.into(),
            expected: "a non-negative integer (at most 2^20)",
        })
}

fn as_positive(v: &Value, key: &str) -> Result<usize, DcaeConfigError> {
    match as_count(v, key)? {
        0 => Err(invalid(key, "must be positive")),
        x => Ok(x),
    }
}

fn positive(v: Option<&Value>, key: &str, default: usize) -> Result<usize, DcaeConfigError> {
    v.map_or(Ok(default), |v| as_positive(v, key))
}

fn kernel_size(v: &Value, key: &str) -> Result<usize, DcaeConfigError> {
    let k = as_positive(v, key)?;
    // An even kernel with padding k/2 changes the resolution and the branches no longer line up.
    if k % 2 == 0 || k > 63 {
        return Err(invalid(key, format!("kernel size {k} is not odd and ≤ 63")));
    }
    Ok(k)
}

fn as_str<'v>(v: &'v Value, key: &str) -> Result<&'v str, DcaeConfigError> {
    v.as_str().ok_or_else(|| DcaeConfigError::Type {
        key: key.into(),
        expected: "a string",
    })
}

fn list<T>(
    v: &Value,
    key: &str,
    item: impl Fn(&Value) -> Result<T, DcaeConfigError>,
) -> Result<Vec<T>, DcaeConfigError> {
    v.as_array()
        .ok_or_else(|| DcaeConfigError::Type {
            key: key.into(),
            expected: "an array",
        })?
        .iter()
        .map(item)
        .collect()
}

/// A per-stage key: one value for every stage, or an array of one per stage.
fn per_stage<T: Copy>(
    v: Option<&Value>,
    key: &str,
    n: usize,
    default: T,
    item: impl Fn(&Value, &str) -> Result<T, DcaeConfigError>,
) -> Result<Vec<T>, DcaeConfigError> {
    match v {
        None => Ok(vec![default; n]),
        Some(Value::Array(items)) => {
            if items.len() != n {
                return Err(invalid(
                    key,
                    format!(
                        "has {} entries for {n} stages (decoder_block_out_channels)",
                        items.len()
                    ),
                ));
            }
            items.iter().map(|x| item(x, key)).collect()
        }
        Some(one) => Ok(vec![item(one, key)?; n]),
    }
}

fn block_type(v: &Value, key: &str) -> Result<BlockType, DcaeConfigError> {
    match as_str(v, key)? {
        "ResBlock" => Ok(BlockType::ResBlock),
        "EfficientViTBlock" => Ok(BlockType::EfficientVitBlock),
        other => Err(DcaeConfigError::Unknown {
            key: key.into(),
            value: other.into(),
            known: "ResBlock, EfficientViTBlock",
        }),
    }
}

fn norm_type(v: &Value, key: &str) -> Result<NormType, DcaeConfigError> {
    match as_str(v, key)? {
        "rms_norm" => Ok(NormType::RmsNorm),
        "batch_norm" => Ok(NormType::BatchNorm),
        other => Err(DcaeConfigError::Unknown {
            key: key.into(),
            value: other.into(),
            known: "rms_norm, batch_norm",
        }),
    }
}

fn activation(v: &Value, key: &str) -> Result<Activation, DcaeConfigError> {
    match as_str(v, key)? {
        "silu" | "swish" => Ok(Activation::Silu),
        "mish" => Ok(Activation::Mish),
        "gelu" => Ok(Activation::Gelu),
        "relu" => Ok(Activation::Relu),
        other => Err(DcaeConfigError::Unknown {
            key: key.into(),
            value: other.into(),
            known: "silu, swish, mish, gelu, relu",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"_class_name": "AutoencoderDC", "attention_head_dim": 8,
        "decoder_act_fns": "silu", "decoder_block_out_channels": [8, 16, 16],
        "decoder_block_types": "ResBlock", "decoder_conv_act_fn": "relu",
        "decoder_in_shortcut": true, "decoder_layers_per_block": [1, 1, 1],
        "decoder_norm_types": "rms_norm", "decoder_qkv_multiscales": [[], [], []],
        "in_channels": 3, "latent_channels": 4, "scaling_factor": 1.5,
        "upsample_block_type": "interpolate"}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(BASE).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn reads_the_fixture_config() {
        let c = DcaeConfig::from_json(BASE).unwrap();
        assert_eq!(c.latent_channels, 4);
        assert_eq!(c.stages.len(), 3);
        assert_eq!(c.stages[2].channels, 16);
        assert_eq!(c.stages[0].block_type, BlockType::ResBlock);
        assert_eq!(c.upsample, UpsampleType::Interpolate);
        assert_eq!(c.scaling_factor, 1.5);
    }

    #[test]
    fn defaults_are_diffusers() {
        let c = DcaeConfig::from_json("{}").unwrap();
        assert_eq!(c.latent_channels, 32);
        assert_eq!(c.stages.len(), 6);
        assert_eq!(c.stages[5].qkv_multiscales, vec![5]);
        assert_eq!(c.stages[0].qkv_multiscales, Vec::<usize>::new());
        assert_eq!(c.upsample, UpsampleType::PixelShuffle);
        assert_eq!(c.conv_activation, Activation::Relu);
    }

    #[test]
    fn per_stage_lists_and_nulls() {
        let c = DcaeConfig::from_json(&with(
            "decoder_block_types",
            r#"["ResBlock", "EfficientViTBlock", "EfficientViTBlock"]"#,
        ))
        .unwrap();
        assert_eq!(c.stages[1].block_type, BlockType::EfficientVitBlock);
        let c =
            DcaeConfig::from_json(&with("decoder_act_fns", r#"["relu", null, "gelu"]"#)).unwrap();
        assert_eq!(c.stages[1].activation, Activation::Identity);
        assert_eq!(c.stages[2].activation, Activation::Gelu);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("decoder_block_types", r#""Transformer""#),
            ("decoder_block_types", r#"["ResBlock"]"#),
            ("decoder_norm_types", r#""layer_norm""#),
            ("decoder_act_fns", r#""relu6""#),
            ("decoder_conv_act_fn", "12"),
            ("upsample_block_type", r#""bilinear""#),
            ("decoder_layers_per_block", "[1, 1]"),
            ("decoder_layers_per_block", "[1, -1, 1]"),
            ("decoder_qkv_multiscales", "[[], [4], []]"),
            ("decoder_block_out_channels", "[8, 0, 16]"),
            ("decoder_block_out_channels", "[]"),
            ("latent_channels", "\"4\""),
            ("decoder_in_shortcut", "1"),
            ("scaling_factor", "-1.0"),
        ];
        for (key, value) in cases {
            let err = DcaeConfig::from_json(&with(key, value)).unwrap_err();
            let key_in_error = match &err {
                DcaeConfigError::Type { key, .. }
                | DcaeConfigError::Unknown { key, .. }
                | DcaeConfigError::Invalid { key, .. } => key.clone(),
                other => panic!("{key}={value}: {other}"),
            };
            assert_eq!(key_in_error, key, "{key}={value}: {err}");
        }
        assert!(matches!(
            DcaeConfig::from_json("{not json"),
            Err(DcaeConfigError::Json(_))
        ));
        assert_eq!(
            DcaeConfig::from_json("[1]"),
            Err(DcaeConfigError::NotAnObject)
        );
    }
}
