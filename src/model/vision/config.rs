//! `VisionConfig`: the Qwen2-VL vision tower's shape and its image processor settings, from the
//! `clip.vision.*` keys (llama.cpp's names) and latte's `latte.vision.*` keys, with Qwen2-VL's
//! defaults where a llama.cpp file lacks a latte key (its mmproj has no merge size, pixel limits or
//! image token ids: the projector type, transformers' processor and the text vocabulary give them).
//!
//! This module owns reading and validating those numbers; it must not load weights.

use crate::image::PreprocessConfig;
use crate::model::projector::QWEN2VL_PROJECTOR;
use crate::model::{ModelError, ModelFile};

/// The vision MLP's activation (`latte.vision.hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisionActivation {
    QuickGelu,
    Gelu,
    GeluTanh,
    Silu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    /// Width of the tower (E).
    pub embed: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub eps: f32,
    pub activation: VisionActivation,
    /// Width of the merger's output, the text decoder's hidden size.
    pub out_dim: usize,
    pub rope_theta: f32,
    pub preprocess: PreprocessConfig,
    pub image_token_id: u32,
    pub start_token_id: u32,
    pub end_token_id: u32,
}

/// Largest image the processor may resize to (Qwen2-VL's default maximum is 1,003,520): beyond
/// this, its buffers would be sized by a number in the file alone.
const MAX_PROCESSED_PIXELS: usize = 1 << 26;

/// Qwen2-VL's vision rotary base; llama.cpp's files do not store it either.
const VISION_ROPE_THETA: f32 = 10_000.0;

impl VisionConfig {
    /// Whether `file` holds a vision tower at all.
    pub fn present(file: &ModelFile) -> bool {
        file.has_tensor("v.patch_embd.weight")
    }

    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let key = |k: &str| format!("clip.vision.{k}");
        let optional_usize = |k: &str, default: usize| match file.get(k) {
            Some(_) => file.usize(k),
            None => Ok(default),
        };
        let embed = file.usize(&key("embedding_length"))?;
        let heads = file.usize(&key("attention.head_count"))?;
        if heads == 0 || embed % heads != 0 || (embed / heads) % 4 != 0 {
            return Err(file.invalid(format!(
                "vision width {embed} with {heads} heads: head size must be a multiple of 4"
            )));
        }
        let activation = match file.get("latte.vision.hidden_act") {
            None => VisionActivation::QuickGelu,
            Some(_) => match file.str("latte.vision.hidden_act")? {
                "quick_gelu" => VisionActivation::QuickGelu,
                "gelu" => VisionActivation::Gelu,
                "gelu_pytorch_tanh" | "gelu_new" => VisionActivation::GeluTanh,
                "silu" => VisionActivation::Silu,
                other => return Err(file.invalid(format!("unknown vision activation '{other}'"))),
            },
        };
        let three = |k: &str| -> Result<[f32; 3], ModelError> {
            let v = file.f64_array(&key(k))?;
            match v.as_slice() {
                [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
                _ => Err(file.invalid(format!("'{}' should hold 3 values", key(k)))),
            }
        };
        // The processor multiplies by Python's 1/255 in f64; the key holds it rounded to f32.
        let rescale_factor = match file.get("latte.vision.preprocess.rescale_factor") {
            None => 1.0 / 255.0,
            Some(_) => {
                let f = file.f32("latte.vision.preprocess.rescale_factor")?;
                if f == (1.0f64 / 255.0) as f32 {
                    1.0 / 255.0
                } else {
                    f64::from(f)
                }
            }
        };
        let token = |k: &str, text: &str| -> Result<u32, ModelError> {
            match file.get(k) {
                Some(_) => u32::try_from(file.usize(k)?)
                    .map_err(|_| file.invalid(format!("'{k}' is not a token id"))),
                None => file
                    .str_array("tokenizer.ggml.tokens")?
                    .iter()
                    .position(|t| t == text)
                    .map(|i| i as u32)
                    .ok_or_else(|| file.invalid(format!("no '{k}' key and no {text} token"))),
            }
        };
        // llama.cpp writes no merge size: its Qwen2-VL projector type implies 2.
        let merge = match (
            file.get(&key("spatial_merge_size")),
            file.get("clip.projector_type"),
        ) {
            (None, Some(kind)) if kind.as_str() == Some(QWEN2VL_PROJECTOR) => 2,
            _ => file.usize(&key("spatial_merge_size"))?,
        };
        let patch = file.usize(&key("patch_size"))?;
        let temporal = optional_usize("latte.vision.temporal_patch_size", 2)?;
        if merge == 0 || patch == 0 || temporal == 0 {
            return Err(file.invalid("vision patch, merge and temporal sizes must be positive"));
        }
        let config = VisionConfig {
            embed,
            layers: file.usize(&key("block_count"))?,
            heads,
            head_dim: embed / heads,
            // The MLP's width is its weight's: llama.cpp's `feed_forward_length` holds the
            // merger's output width for Qwen2-VL (its converter's renaming), latte's the real one.
            ffn: *file
                .tensor_dims("v.blk.0.ffn_up.weight")?
                .get(1)
                .ok_or_else(|| file.invalid("v.blk.0.ffn_up.weight is not a matrix"))?
                as usize,
            eps: file.f32(&key("attention.layer_norm_epsilon"))?,
            activation,
            out_dim: file.usize(&key("projection_dim"))?,
            rope_theta: VISION_ROPE_THETA,
            preprocess: PreprocessConfig {
                patch_size: patch,
                temporal_patch_size: temporal,
                merge_size: merge,
                min_pixels: optional_usize(&key("image_min_pixels"), 56 * 56)?,
                max_pixels: optional_usize(&key("image_max_pixels"), 28 * 28 * 1280)?,
                mean: three("image_mean")?,
                std: three("image_std")?,
                rescale_factor,
            },
            image_token_id: token("latte.vision.image_token_id", "<|image_pad|>")?,
            start_token_id: token("latte.vision.start_token_id", "<|vision_start|>")?,
            end_token_id: token("latte.vision.end_token_id", "<|vision_end|>")?,
        };
        config.check(file)?;
        Ok(config)
    }

    /// What the tower and the processor can work with: a processor that divides by a positive
    /// std and resizes within bounded sizes, token ids inside the text model's vocabulary.
    fn check(&self, file: &ModelFile) -> Result<(), ModelError> {
        let p = &self.preprocess;
        if let Some(std) = p.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(file.invalid(format!(
                "clip.vision.image_std {:?}: {std} is not a positive number (pixels are divided by it)",
                p.std
            )));
        }
        if p.mean.iter().any(|m| !m.is_finite())
            || !(p.rescale_factor.is_finite() && p.rescale_factor > 0.0)
        {
            return Err(file.invalid(format!(
                "vision preprocessing: image_mean {:?} and rescale factor {} must be finite (the factor positive)",
                p.mean, p.rescale_factor
            )));
        }
        if p.min_pixels > p.max_pixels || p.max_pixels > MAX_PROCESSED_PIXELS {
            return Err(file.invalid(format!(
                "vision preprocessing: image_min_pixels {} and image_max_pixels {} must be ordered, the maximum at most {MAX_PROCESSED_PIXELS}",
                p.min_pixels, p.max_pixels
            )));
        }
        let factor = p.patch_size.checked_mul(p.merge_size);
        if factor.is_none_or(|f| f > 1 << 12) || p.temporal_patch_size > 16 {
            return Err(file.invalid(format!(
                "vision patch size {} × merge size {} (temporal {}) is not a real tower's",
                p.patch_size, p.merge_size, p.temporal_patch_size
            )));
        }
        // Token ids index the text model's embedding rows.
        let vocab = file
            .tensor_dims("token_embd.weight")
            .ok()
            .and_then(|d| d.get(1).copied());
        let ids = [
            ("latte.vision.image_token_id", self.image_token_id),
            ("latte.vision.start_token_id", self.start_token_id),
            ("latte.vision.end_token_id", self.end_token_id),
        ];
        if let Some(vocab) = vocab {
            if let Some((key, id)) = ids.iter().find(|(_, id)| u64::from(*id) >= vocab) {
                return Err(file.invalid(format!(
                    "{key} {id} lies outside the vocabulary of {vocab} tokens"
                )));
            }
        }
        Ok(())
    }

    /// Values of one patch row: `3 · temporal · patch²`.
    pub fn patch_len(&self) -> usize {
        3 * self.preprocess.temporal_patch_size * self.preprocess.patch_size.pow(2)
    }

    /// Patches merged into one text token: `merge²`.
    pub fn merge_count(&self) -> usize {
        self.preprocess.merge_size.pow(2)
    }
}
