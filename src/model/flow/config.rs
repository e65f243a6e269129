//! `FlowConfig`: the replica's shape and every generation switch, read from a LaTtE-Flow file's
//! `latte.flow.*` keys (MODEL.md §2–§6, tools/reference/README.md table 3) and validated once.
//!
//! This module owns parsing and validation of those keys; it must not load tensors or do math.

use crate::model::expert_groups::{KEY_GROUP_COUNT, KEY_LAYER_COUNT};
use crate::model::{ModelError, ModelFile};

/// The only generation format this engine reads.
pub const FLOW_FORMAT: &str = "latte-flow-generation/1";

/// Where the prompt keys/values a replica layer attends to come from (switch `ctx_kv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextKv {
    /// The frozen VLM layer's own KV cache.
    Frozen,
    /// The replica layer's k/v projections of the frozen layer's normed input.
    Replica,
}

/// How image tokens are placed for RoPE (switch `img_pos`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePositions {
    /// (t, h, w) = (start, start + row, start + col), as Qwen2-VL places an image.
    Mrope2d,
    /// start + token index in all three components.
    Rope1d,
}

/// Timestep-conditioned residual attention (switch `tcra`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tcra {
    PreSoftmax,
    PostSoftmax,
    None,
}

/// Everything the replica, the schedule and the sampler read from the file.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowConfig {
    pub layer_count: usize,
    pub group_count: usize,
    pub layers_per_group: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn_hidden: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_sections: [usize; 3],
    /// K + 1 boundaries from 0 to 1, increasing; f64 as stored, so no step changes group.
    pub group_boundaries: Vec<f64>,
    pub ctx_kv: ContextKv,
    pub img_pos: ImagePositions,
    pub tcra: Tcra,
    pub per_group_head: bool,
    pub time_shift: f64,
    pub guidance_scale: f32,
    pub num_steps: usize,
    pub latent_channels: usize,
    pub latent_size: usize,
    pub patch_size: usize,
    pub scaling_factor: f32,
    pub image_size: usize,
    pub time_freq_dim: usize,
    pub prompt_template: String,
}

/// Widths, sizes and channel counts above this are not a real model (and would overflow buffer
/// sizes); the DC-AE config has the same bound.
const MAX_WIDTH: usize = 1 << 20;
/// One latent's values at most: 2^26 f32 (256 MiB), thousands of times a 512-pixel latent.
const MAX_LATENT_VALUES: usize = 1 << 26;
/// Image tokens per latent at most (attention scores grow with the square).
const MAX_IMAGE_TOKENS: usize = 1 << 16;

fn key(name: &str) -> String {
    format!("latte.flow.{name}")
}

impl FlowConfig {
    /// True when the file has a generation pathway at all (a plain Qwen2-VL file has none).
    pub fn present(file: &ModelFile) -> bool {
        file.get(&key("format")).is_some()
    }

    /// Reads and validates every `latte.flow.*` key.
    pub fn from_file(file: &ModelFile) -> Result<Self, ModelError> {
        let format = file.str(&key("format"))?;
        if format != FLOW_FORMAT {
            return Err(file.invalid(format!(
                "generation format '{format}' is not supported (expected '{FLOW_FORMAT}')"
            )));
        }
        let sections = file.i64_array(&key("rope.dimension_sections"))?;
        let section = |i: usize| {
            sections
                .get(i)
                .and_then(|&s| usize::try_from(s).ok())
                .ok_or_else(|| {
                    file.invalid(format!(
                        "latte.flow.rope.dimension_sections {sections:?} needs three non-negative values"
                    ))
                })
        };
        let choice =
            |name: &str| -> Result<String, ModelError> { Ok(file.str(&key(name))?.to_string()) };
        let ctx_kv = match choice("ctx_kv")?.as_str() {
            "frozen" => ContextKv::Frozen,
            "replica" => ContextKv::Replica,
            other => return Err(file.invalid(format!("unknown latte.flow.ctx_kv '{other}'"))),
        };
        let img_pos = match choice("img_pos")?.as_str() {
            "mrope2d" => ImagePositions::Mrope2d,
            "rope1d" => ImagePositions::Rope1d,
            other => return Err(file.invalid(format!("unknown latte.flow.img_pos '{other}'"))),
        };
        let tcra = match choice("tcra")?.as_str() {
            "pre_softmax" => Tcra::PreSoftmax,
            "post_softmax" => Tcra::PostSoftmax,
            "none" => Tcra::None,
            other => return Err(file.invalid(format!("unknown latte.flow.tcra '{other}'"))),
        };
        let layer_count = file.usize(KEY_LAYER_COUNT)?;
        let group_count = file.usize(KEY_GROUP_COUNT)?;
        let config = FlowConfig {
            layer_count,
            group_count,
            layers_per_group: layer_count.checked_div(group_count).unwrap_or(0),
            hidden: file.usize(&key("embedding_length"))?,
            heads: file.usize(&key("head_count"))?,
            kv_heads: file.usize(&key("head_count_kv"))?,
            head_dim: file.usize(&key("head_dim"))?,
            ffn_hidden: file.usize(&key("feed_forward_length"))?,
            rms_eps: file.f32(&key("layer_norm_rms_epsilon"))?,
            rope_theta: file.f32(&key("rope.freq_base"))?,
            rope_sections: [section(0)?, section(1)?, section(2)?],
            group_boundaries: file.f64_array(&key("group_boundaries"))?,
            ctx_kv,
            img_pos,
            tcra,
            per_group_head: file.bool(&key("per_group_head"))?,
            time_shift: file.f64(&key("time_shift"))?,
            guidance_scale: file.f32(&key("guidance_scale"))?,
            num_steps: file.usize(&key("num_steps"))?,
            latent_channels: file.usize(&key("latent_channels"))?,
            latent_size: file.usize(&key("latent_size"))?,
            patch_size: file.usize(&key("patch_size"))?,
            scaling_factor: file.f32(&key("scaling_factor"))?,
            image_size: file.usize(&key("image_size"))?,
            time_freq_dim: file.usize(&key("time_freq_dim"))?,
            prompt_template: file.str(&key("prompt_template"))?.to_string(),
        };
        config.validate().map_err(|what| file.invalid(what))?;
        Ok(config)
    }

    /// Checks that the shape adds up; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("layer_count", self.layer_count),
            ("group_count", self.group_count),
            ("embedding_length", self.hidden),
            ("head_count", self.heads),
            ("head_count_kv", self.kv_heads),
            ("head_dim", self.head_dim),
            ("feed_forward_length", self.ffn_hidden),
            ("latent_channels", self.latent_channels),
            ("latent_size", self.latent_size),
            ("patch_size", self.patch_size),
            ("time_freq_dim", self.time_freq_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("latte.flow.{name} must be positive"));
        }
        if !self.layer_count.is_multiple_of(self.group_count) {
            return Err(format!(
                "latte.flow.layer_count {} cannot form latte.flow.group_count {} equal groups",
                self.layer_count, self.group_count
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "latte.flow.head_count {} is not a multiple of latte.flow.head_count_kv {}",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2)
            || self.rope_sections.iter().sum::<usize>() != self.head_dim / 2
        {
            return Err(format!(
                "latte.flow.rope.dimension_sections {:?} must add up to head_dim / 2 = {}",
                self.rope_sections,
                self.head_dim / 2
            ));
        }
        if !self.time_freq_dim.is_multiple_of(2) {
            return Err("latte.flow.time_freq_dim must be even".into());
        }
        if !self.latent_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "latte.flow.latent_size {} is not a multiple of latte.flow.patch_size {}",
                self.latent_size, self.patch_size
            ));
        }
        let b = &self.group_boundaries;
        if b.len() != self.group_count + 1
            || b.first() != Some(&0.0)
            || b.last() != Some(&1.0)
            || b.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(format!(
                "latte.flow.group_boundaries {b:?} must be {} increasing values from 0 to 1",
                self.group_count + 1
            ));
        }
        if !(self.time_shift.is_finite() && self.time_shift > 0.0) {
            return Err(format!(
                "latte.flow.time_shift {} must be positive",
                self.time_shift
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "latte.flow.rope.freq_base {} must be positive",
                self.rope_theta
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return Err(format!(
                "latte.flow.layer_norm_rms_epsilon {} must be a number ≥ 0",
                self.rms_eps
            ));
        }
        // The latent is divided by it before decoding: 0 would decode infinities.
        if !(self.scaling_factor.is_finite()
            && self.scaling_factor.is_normal()
            && self.scaling_factor > 0.0)
        {
            return Err(format!(
                "latte.flow.scaling_factor {} must be a positive number",
                self.scaling_factor
            ));
        }
        if !(self.guidance_scale.is_finite() && self.guidance_scale >= 0.0) {
            return Err(format!(
                "latte.flow.guidance_scale {} must be a number ≥ 0",
                self.guidance_scale
            ));
        }
        if self.num_steps == 0 || self.num_steps > crate::schedule::MAX_STEPS {
            return Err(format!(
                "latte.flow.num_steps {} must be 1 to {}",
                self.num_steps,
                crate::schedule::MAX_STEPS
            ));
        }
        // Buffers are sized by these without any tensor to bound them.
        let widths = [
            ("embedding_length", self.hidden),
            ("head_dim", self.head_dim),
            ("feed_forward_length", self.ffn_hidden),
            ("time_freq_dim", self.time_freq_dim),
            ("image_size", self.image_size),
            ("latent_size", self.latent_size),
            ("latent_channels", self.latent_channels),
        ];
        if let Some((name, value)) = widths.iter().find(|(_, v)| *v > MAX_WIDTH) {
            return Err(format!("latte.flow.{name} {value} exceeds {MAX_WIDTH}"));
        }
        if (self.latent_len() as u64) > MAX_LATENT_VALUES as u64
            || self.image_tokens() > MAX_IMAGE_TOKENS
        {
            return Err(format!(
                "latte.flow.latent_size: a {}×{}×{} latent ({} image tokens) is larger than any this engine allocates (at most {MAX_LATENT_VALUES} values, {MAX_IMAGE_TOKENS} tokens)",
                self.latent_channels,
                self.latent_size,
                self.latent_size,
                self.image_tokens()
            ));
        }
        if !self.prompt_template.contains("{prompt}") {
            return Err("latte.flow.prompt_template has no '{prompt}' placeholder".into());
        }
        Ok(())
    }

    /// Image tokens per side: latent_size / patch_size.
    pub fn grid(&self) -> usize {
        self.latent_size / self.patch_size
    }

    /// Image tokens per latent.
    pub fn image_tokens(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Features of one image token: C·p².
    pub fn token_features(&self) -> usize {
        self.latent_channels * self.patch_size * self.patch_size
    }

    /// Values in one latent [C, S, S].
    pub fn latent_len(&self) -> usize {
        self.latent_channels * self.latent_size * self.latent_size
    }

    /// The layers of expert group `group`.
    pub fn layers_of(&self, group: usize) -> std::ops::Range<usize> {
        group * self.layers_per_group..(group + 1) * self.layers_per_group
    }

    /// The text fed to the VLM for `prompt` (the empty prompt gives the unconditional one).
    pub fn prompt_text(&self, prompt: &str) -> String {
        self.prompt_template.replace("{prompt}", prompt)
    }
}
