//! The metadata keys a converted file carries: `general.*`, llama.cpp's `qwen2vl.*` and
//! `clip.vision.*` keys, the image preprocessing parameters, and latte's own `latte.*` keys for
//! the generation replica (every MODEL.md switch) and the DC-AE decoder. ARCHITECTURE.md lists
//! them; this module only builds key/value pairs.

use super::config::{GenerationConfig, PreprocessorConfig, Qwen2VlConfig};
use crate::gguf::MetadataValue;
use crate::model::expert_groups::{KEY_GROUP_COUNT, KEY_LAYER_COUNT};

pub const ARCHITECTURE: &str = "qwen2vl";
/// `understanding` (a plain Qwen2-VL) or `latte-flow` (understanding and generation).
pub const KEY_MODEL_KIND: &str = "latte.model_kind";
/// Set (to a description) on synthetic files: random weights with real shapes, for benchmarks.
pub const KEY_SYNTHETIC: &str = "latte.synthetic";
/// The DC-AE decoder's diffusers config, verbatim JSON.
pub const KEY_DCAE_CONFIG: &str = crate::model::dcae::KEY_CONFIG_JSON;

type Entries = Vec<(String, MetadataValue)>;

fn u32_of(x: u64) -> MetadataValue {
    // Config values checked non-zero and small; saturate rather than wrap if a config is absurd.
    MetadataValue::U32(u32::try_from(x).unwrap_or(u32::MAX))
}

/// `general.*` and the Qwen2-VL text keys.
pub fn text_model(c: &Qwen2VlConfig, name: &str) -> Entries {
    let a = ARCHITECTURE;
    let s = &c.mrope_section;
    vec![
        ("general.architecture".into(), a.into()),
        ("general.type".into(), "model".into()),
        ("general.name".into(), name.into()),
        (format!("{a}.context_length"), u32_of(c.context_length)),
        (format!("{a}.embedding_length"), u32_of(c.hidden_size)),
        (format!("{a}.block_count"), u32_of(c.layers)),
        (
            format!("{a}.feed_forward_length"),
            u32_of(c.intermediate_size),
        ),
        (format!("{a}.attention.head_count"), u32_of(c.heads)),
        (format!("{a}.attention.head_count_kv"), u32_of(c.kv_heads)),
        (
            format!("{a}.rope.freq_base"),
            MetadataValue::F32(c.rope_theta as f32),
        ),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            MetadataValue::F32(c.rms_norm_eps as f32),
        ),
        // llama.cpp reads four sections (the fourth is unused by Qwen2-VL).
        (
            format!("{a}.rope.dimension_sections"),
            vec![s[0] as i32, s[1] as i32, s[2] as i32, 0].into(),
        ),
        (
            "latte.tie_word_embeddings".into(),
            c.tie_word_embeddings.into(),
        ),
    ]
}

/// llama.cpp's `clip.*` keys for the vision tower, and the image processor's parameters.
pub fn vision(c: &Qwen2VlConfig, p: &PreprocessorConfig) -> Entries {
    let v = &c.vision;
    let f32s = |x: &[f64]| MetadataValue::from(x.iter().map(|&v| v as f32).collect::<Vec<f32>>());
    let mut out: Entries = vec![
        ("clip.has_vision_encoder".into(), true.into()),
        ("clip.projector_type".into(), "qwen2vl_merger".into()),
        ("clip.vision.patch_size".into(), u32_of(v.patch_size)),
        // Qwen2-VL takes any resolution; clip.cpp still requires this key, and llama.cpp's converter
        // writes 560 (40 patches) for it.
        ("clip.vision.image_size".into(), u32_of(40 * v.patch_size)),
        ("clip.vision.embedding_length".into(), u32_of(v.embed_dim)),
        (
            "clip.vision.feed_forward_length".into(),
            u32_of(v.embed_dim * v.mlp_ratio),
        ),
        ("clip.vision.block_count".into(), u32_of(v.depth)),
        ("clip.vision.attention.head_count".into(), u32_of(v.heads)),
        // Qwen2-VL's vision LayerNorms use eps 1e-6 (fixed in transformers, not in the config).
        (
            "clip.vision.attention.layer_norm_epsilon".into(),
            MetadataValue::F32(1e-6),
        ),
        (
            "clip.vision.projection_dim".into(),
            u32_of(v.projection_dim),
        ),
        (
            "clip.vision.spatial_merge_size".into(),
            u32_of(v.spatial_merge_size),
        ),
        ("clip.vision.image_mean".into(), f32s(&p.image_mean)),
        ("clip.vision.image_std".into(), f32s(&p.image_std)),
        ("clip.vision.image_min_pixels".into(), u32_of(p.min_pixels)),
        ("clip.vision.image_max_pixels".into(), u32_of(p.max_pixels)),
        (
            "latte.vision.hidden_act".into(),
            v.hidden_act.as_str().into(),
        ),
        (
            "latte.vision.temporal_patch_size".into(),
            u32_of(v.temporal_patch_size),
        ),
        (
            "latte.vision.preprocess.resample".into(),
            u32_of(p.resample),
        ),
        (
            "latte.vision.preprocess.rescale_factor".into(),
            MetadataValue::F32(p.rescale_factor as f32),
        ),
    ];
    for (key, id) in [
        ("latte.vision.image_token_id", c.image_token_id),
        ("latte.vision.start_token_id", c.vision_start_token_id),
        ("latte.vision.end_token_id", c.vision_end_token_id),
    ] {
        if let Some(id) = id {
            out.push((key.into(), u32_of(id)));
        }
    }
    out
}

/// The replica's shape and every switch (`latte.flow.*`).
pub fn generation(g: &GenerationConfig) -> Entries {
    let k = |name: &str| format!("latte.flow.{name}");
    vec![
        (KEY_LAYER_COUNT.into(), u32_of(g.layers)),
        (KEY_GROUP_COUNT.into(), u32_of(g.groups)),
        (k("format"), g.format.as_str().into()),
        (k("embedding_length"), u32_of(g.hidden_size)),
        (k("head_count"), u32_of(g.heads)),
        (k("head_count_kv"), u32_of(g.kv_heads)),
        (k("head_dim"), u32_of(g.head_dim)),
        (k("feed_forward_length"), u32_of(g.intermediate_size)),
        (
            k("layer_norm_rms_epsilon"),
            MetadataValue::F32(g.rms_norm_eps as f32),
        ),
        (k("rope.freq_base"), MetadataValue::F32(g.rope_theta as f32)),
        (
            k("rope.dimension_sections"),
            g.mrope_section
                .iter()
                .map(|&s| s as i32)
                .collect::<Vec<i32>>()
                .into(),
        ),
        // f64: the schedule is computed in f64, and a boundary rounded to f32 could move a step
        // to the neighbouring group.
        (k("group_boundaries"), g.group_boundaries.clone().into()),
        (k("ctx_kv"), g.ctx_kv.as_str().into()),
        (k("img_pos"), g.img_pos.as_str().into()),
        (k("tcra"), g.tcra.as_str().into()),
        (k("per_group_head"), g.per_group_head.into()),
        (k("time_shift"), MetadataValue::F64(g.time_shift)),
        (
            k("guidance_scale"),
            MetadataValue::F32(g.guidance_scale as f32),
        ),
        (k("num_steps"), u32_of(g.num_steps)),
        (k("latent_channels"), u32_of(g.latent_channels)),
        (k("latent_size"), u32_of(g.latent_size)),
        (k("patch_size"), u32_of(g.patch_size)),
        (
            k("scaling_factor"),
            MetadataValue::F32(g.scaling_factor as f32),
        ),
        (k("image_size"), u32_of(g.image_size)),
        (k("time_freq_dim"), u32_of(g.time_freq_dim)),
        (k("prompt_template"), g.prompt_template.as_str().into()),
    ]
}
