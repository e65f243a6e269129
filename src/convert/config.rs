//! The configuration files of a checkpoint, read into typed structs and checked for consistency:
//! Qwen2-VL's `config.json` (the hub's flat layout or transformers 5's nested one),
//! `preprocessor_config.json`, and LaTtE-Flow's `generation/config.json` (MODEL.md's switches).
//! Values only; names and shapes of tensors are `names.rs`'s.

use std::path::Path;

use super::error::ConvertError;
use super::json::JsonFile;

/// Qwen2-VL's text model and vision tower shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen2VlConfig {
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub mrope_section: [u64; 3],
    pub context_length: u64,
    pub tie_word_embeddings: bool,
    pub vision: VisionConfig,
    pub image_token_id: Option<u64>,
    pub vision_start_token_id: Option<u64>,
    pub vision_end_token_id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub depth: u64,
    pub embed_dim: u64,
    pub heads: u64,
    pub mlp_ratio: u64,
    pub patch_size: u64,
    pub temporal_patch_size: u64,
    pub spatial_merge_size: u64,
    pub in_channels: u64,
    /// Width of the merger output (= the LLM's hidden size).
    pub projection_dim: u64,
    pub hidden_act: String,
}

impl Qwen2VlConfig {
    pub fn head_dim(&self) -> u64 {
        self.hidden_size / self.heads
    }

    /// Reads `config.json`: text keys from `text_config` (nested) or the top level (flat); M-RoPE
    /// from `rope_parameters` (nested) or `rope_scaling` (flat).
    pub fn read(path: &Path) -> Result<Qwen2VlConfig, ConvertError> {
        Qwen2VlConfig::parse(
            path,
            &std::fs::read(path).map_err(|source| ConvertError::Io {
                path: path.to_path_buf(),
                cause: source,
            })?,
        )
    }

    /// Parses the bytes of a `config.json` (`path` is only named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Qwen2VlConfig, ConvertError> {
        let f = JsonFile::parse(path, bytes)?;
        let text = |key: &str| [format!("text_config.{key}"), key.to_string()];
        let keys = |key: &str| text(key);
        let u = |key: &str| -> Result<u64, ConvertError> {
            let k = keys(key);
            f.u64_of(&[&k[0], &k[1]])
        };
        let model_type = f.str_of(&["model_type"]).unwrap_or("");
        if !model_type.is_empty() && model_type != "qwen2_vl" {
            return Err(f.error(format!(
                "model_type '{model_type}' is not 'qwen2_vl' (only Qwen2-VL checkpoints are supported)"
            )));
        }
        let section = f.u64_array_of(&[
            "text_config.rope_parameters.mrope_section",
            "text_config.rope_scaling.mrope_section",
            "rope_parameters.mrope_section",
            "rope_scaling.mrope_section",
        ])?;
        let mrope_section: [u64; 3] = section
            .as_slice()
            .try_into()
            .map_err(|_| f.error(format!("mrope_section {section:?} must have 3 entries")))?;
        let rope_theta = f.f64_of(&[
            "text_config.rope_parameters.rope_theta",
            "text_config.rope_theta",
            "rope_parameters.rope_theta",
            "rope_theta",
        ])?;
        let v = |key: &str| f.u64_of(&[&format!("vision_config.{key}")]);
        let hidden_size = u("hidden_size")?;
        let vision = VisionConfig {
            depth: v("depth")?,
            embed_dim: v("embed_dim")?,
            heads: v("num_heads")?,
            mlp_ratio: v("mlp_ratio")?,
            patch_size: v("patch_size")?,
            temporal_patch_size: v("temporal_patch_size")?,
            spatial_merge_size: v("spatial_merge_size")?,
            // The hub's config says `in_chans`, transformers 5 `in_channels`.
            in_channels: v("in_channels").or_else(|_| v("in_chans")).unwrap_or(3),
            projection_dim: v("hidden_size").unwrap_or(hidden_size),
            hidden_act: f
                .str_of(&["vision_config.hidden_act"])
                .unwrap_or("quick_gelu")
                .to_string(),
        };
        let tie = f
            .bool_of(&["tie_word_embeddings", "text_config.tie_word_embeddings"])
            .unwrap_or(false);
        let optional = |key: &str| f.u64_of(&[key]).ok();
        let config = Qwen2VlConfig {
            vocab_size: u("vocab_size")?,
            hidden_size,
            intermediate_size: u("intermediate_size")?,
            layers: u("num_hidden_layers")?,
            heads: u("num_attention_heads")?,
            kv_heads: u("num_key_value_heads")?,
            rms_norm_eps: f.f64_of(&["text_config.rms_norm_eps", "rms_norm_eps"])?,
            rope_theta,
            mrope_section,
            context_length: u("max_position_embeddings")?,
            tie_word_embeddings: tie,
            vision,
            image_token_id: optional("image_token_id"),
            vision_start_token_id: optional("vision_start_token_id"),
            vision_end_token_id: optional("vision_end_token_id"),
        };
        config.validate(&f)?;
        Ok(config)
    }

    /// Guards for the converter's own arithmetic (head sizes, tensor shapes and names); what
    /// makes a valid model is the loaders' rule, run on the planned file (`validate`).
    fn validate(&self, f: &JsonFile) -> Result<(), ConvertError> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("vision_config.depth", self.vision.depth),
            ("vision_config.embed_dim", self.vision.embed_dim),
            ("vision_config.num_heads", self.vision.heads),
            ("vision_config.patch_size", self.vision.patch_size),
            (
                "vision_config.temporal_patch_size",
                self.vision.temporal_patch_size,
            ),
            (
                "vision_config.spatial_merge_size",
                self.vision.spatial_merge_size,
            ),
        ];
        if let Some((key, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(f.error(format!("'{key}' must not be 0")));
        }
        if !self.hidden_size.is_multiple_of(self.heads) || !self.heads.is_multiple_of(self.kv_heads)
        {
            return Err(f.error(format!(
                "hidden_size {} / heads {} / kv heads {} do not divide",
                self.hidden_size, self.heads, self.kv_heads
            )));
        }
        Ok(())
    }
}

/// Qwen2-VL's image processor parameters (`preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessorConfig {
    pub min_pixels: u64,
    pub max_pixels: u64,
    pub image_mean: Vec<f64>,
    pub image_std: Vec<f64>,
    pub rescale_factor: f64,
    pub resample: u64,
    pub patch_size: u64,
    pub merge_size: u64,
    pub temporal_patch_size: u64,
}

impl PreprocessorConfig {
    pub fn read(path: &Path) -> Result<PreprocessorConfig, ConvertError> {
        let f = JsonFile::read(path)?;
        let config = PreprocessorConfig {
            min_pixels: f.u64_of(&["size.shortest_edge", "min_pixels"])?,
            max_pixels: f.u64_of(&["size.longest_edge", "max_pixels"])?,
            image_mean: f.f64_array_of(&["image_mean"])?,
            image_std: f.f64_array_of(&["image_std"])?,
            rescale_factor: f.f64_of(&["rescale_factor"]).unwrap_or(1.0 / 255.0),
            resample: f.u64_of(&["resample"]).unwrap_or(3),
            patch_size: f.u64_of(&["patch_size"])?,
            merge_size: f.u64_of(&["merge_size"])?,
            temporal_patch_size: f.u64_of(&["temporal_patch_size"])?,
        };
        if config.image_mean.len() != 3 || config.image_std.len() != 3 {
            return Err(f.error("image_mean and image_std must have 3 entries"));
        }
        if config.min_pixels > config.max_pixels {
            return Err(f.error("min pixels exceed max pixels"));
        }
        Ok(config)
    }
}

/// `generation/config.json`: the replica's shape and every MODEL.md switch.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    pub layers: u64,
    pub hidden_size: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub intermediate_size: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub mrope_section: Vec<u64>,
    pub groups: u64,
    pub group_boundaries: Vec<f64>,
    pub ctx_kv: String,
    pub img_pos: String,
    pub tcra: String,
    pub per_group_head: bool,
    pub time_shift: f64,
    pub guidance_scale: f64,
    pub num_steps: u64,
    pub latent_channels: u64,
    pub latent_size: u64,
    pub patch_size: u64,
    pub scaling_factor: f64,
    pub image_size: u64,
    pub time_freq_dim: u64,
    pub prompt_template: String,
    pub format: String,
}

pub const GENERATION_FORMAT: &str = "latte-flow-generation/1";

impl GenerationConfig {
    pub fn layers_per_group(&self) -> u64 {
        self.layers / self.groups
    }

    /// Reads it (its agreement with the VLM it replicates is checked on the planned file).
    pub fn read(path: &Path) -> Result<GenerationConfig, ConvertError> {
        let bytes = std::fs::read(path).map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            cause: source,
        })?;
        GenerationConfig::parse(path, &bytes)
    }

    /// Parses the bytes of a `generation/config.json` (`path` is only named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<GenerationConfig, ConvertError> {
        let f = JsonFile::parse(path, bytes)?;
        let u = |k: &str| f.u64_of(&[k]);
        let x = |k: &str| f.f64_of(&[k]);
        let s = |k: &str| f.str_of(&[k]).map(str::to_string);
        let config = GenerationConfig {
            layers: u("num_layers")?,
            hidden_size: u("hidden_size")?,
            heads: u("num_attention_heads")?,
            kv_heads: u("num_key_value_heads")?,
            head_dim: u("head_dim")?,
            intermediate_size: u("intermediate_size")?,
            rms_norm_eps: x("rms_norm_eps")?,
            rope_theta: x("rope_theta")?,
            mrope_section: f.u64_array_of(&["mrope_section"])?,
            groups: u("num_groups")?,
            group_boundaries: f.f64_array_of(&["group_boundaries"])?,
            ctx_kv: s("ctx_kv")?,
            img_pos: s("img_pos")?,
            tcra: s("tcra")?,
            per_group_head: f.bool_of(&["per_group_head"])?,
            time_shift: x("time_shift")?,
            guidance_scale: x("guidance_scale")?,
            num_steps: u("num_steps")?,
            latent_channels: u("latent_channels")?,
            latent_size: u("latent_size")?,
            patch_size: u("patch_size")?,
            scaling_factor: x("scaling_factor")?,
            image_size: u("image_size")?,
            time_freq_dim: u("time_freq_dim")?,
            prompt_template: s("prompt_template")?,
            format: s("format")?,
        };
        config.validate(&f)?;
        Ok(config)
    }

    /// Guards for the converter's own arithmetic (groups of layers); the rest of what makes a
    /// valid replica (its switches, boundaries, schedule, agreement with the VLM) is the loaders'
    /// rule, run on the planned file (`validate`).
    fn validate(&self, f: &JsonFile) -> Result<(), ConvertError> {
        if self.groups == 0 || !self.layers.is_multiple_of(self.groups) {
            return Err(f.error(format!(
                "{} layers cannot be split into {} equal groups",
                self.layers, self.groups
            )));
        }
        Ok(())
    }
}
