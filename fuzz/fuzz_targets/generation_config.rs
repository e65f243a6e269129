//! Fuzzes the generation metadata the loaders read from a LaTtE-Flow file: the DC-AE config JSON
//! (`DcaeConfig::from_json`, stored under `latte.dcae.config_json`) straight from bytes, and
//! `FlowConfig::from_file` on an in-memory GGUF file whose `latte.flow.*` values come from the
//! input. When the flow config is accepted, what its callers use is exercised: `grid`,
//! `image_tokens`, `token_features`, `latent_len`, `layers_of` for every group, `prompt_text`,
//! the timestep schedule its `num_steps` / `time_shift` / `group_boundaries` make, and the
//! expert-group layout (`GroupLayout::from_file`), which must agree with it. Nothing may panic,
//! overflow or allocate without bound; an accepted DC-AE config has the stages its checks promise.
//!
//! Input: the DC-AE JSON up to the first `0xFF` (a byte UTF-8 never holds), then one encoded
//! value per `latte.flow.*` key, in the order of [`FLOW_KEYS`]: a tag byte (`tag % 16`: 0 absent,
//! 1–8 u8 i8 u16 i16 u32 i32 u64 i64, 9 f32, 10 f64, 11 bool, 12 string of `len` bytes, 13 one
//! of [`KNOWN_STRINGS`], 14 array of `count` scalars of one tag, 15 array of `count` such
//! arrays), then its little-endian payload; bytes past the end read as 0.
//!
//! Registered in `fuzz/Cargo.toml` as
//! `[[bin]] name = "generation_config", path = "fuzz_targets/generation_config.rs", test = false,
//! doc = false, bench = false`. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run generation_config fuzz/corpus/generation_config fuzz/seeds/generation_config`
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use latte::gguf::{GgufBuilder, MetadataArray, MetadataValue};
use latte::model::dcae::{DcaeConfig, KEY_CONFIG_JSON};
use latte::model::expert_groups::GroupLayout;
use latte::model::flow::config::{FlowConfig, FLOW_FORMAT};
use latte::model::ModelFile;
use latte::schedule::TimestepSchedule;
use libfuzzer_sys::fuzz_target;

/// Every key `FlowConfig::from_file` reads, in the order the input encodes them.
const FLOW_KEYS: [&str; 28] = [
    "latte.flow.format",
    "latte.flow.layer_count",
    "latte.flow.group_count",
    "latte.flow.embedding_length",
    "latte.flow.head_count",
    "latte.flow.head_count_kv",
    "latte.flow.head_dim",
    "latte.flow.feed_forward_length",
    "latte.flow.layer_norm_rms_epsilon",
    "latte.flow.rope.freq_base",
    "latte.flow.rope.dimension_sections",
    "latte.flow.group_boundaries",
    "latte.flow.ctx_kv",
    "latte.flow.img_pos",
    "latte.flow.tcra",
    "latte.flow.per_group_head",
    "latte.flow.time_shift",
    "latte.flow.guidance_scale",
    "latte.flow.num_steps",
    "latte.flow.latent_channels",
    "latte.flow.latent_size",
    "latte.flow.patch_size",
    "latte.flow.scaling_factor",
    "latte.flow.image_size",
    "latte.flow.time_freq_dim",
    "latte.flow.prompt_template",
    // Not read by `FlowConfig`, but stored beside it: a loader must not trip over either.
    KEY_CONFIG_JSON,
    "latte.flow.extra",
];

/// Strings the switches accept, so the fuzzer reaches validation without guessing them.
const KNOWN_STRINGS: [&str; 12] = [
    FLOW_FORMAT,
    "frozen",
    "replica",
    "mrope2d",
    "rope1d",
    "pre_softmax",
    "post_softmax",
    "none",
    "{prompt}",
    "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
    "{prompt}{prompt}",
    "",
];

/// The input being decoded; reads past the end give zeros.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }

    fn string(&mut self) -> String {
        let len = usize::from(self.byte());
        let end = (self.at + len).min(self.data.len());
        let s = String::from_utf8_lossy(self.data.get(self.at..end).unwrap_or_default());
        self.at += len;
        s.into_owned()
    }

    fn known(&mut self) -> String {
        KNOWN_STRINGS[usize::from(self.byte()) % KNOWN_STRINGS.len()].to_string()
    }

    /// A scalar of tag `tag` (1..=13), or `None` for any other tag.
    fn scalar(&mut self, tag: u8) -> Option<MetadataValue> {
        Some(match tag {
            1 => MetadataValue::U8(self.byte()),
            2 => MetadataValue::I8(i8::from_le_bytes(self.bytes())),
            3 => MetadataValue::U16(u16::from_le_bytes(self.bytes())),
            4 => MetadataValue::I16(i16::from_le_bytes(self.bytes())),
            5 => MetadataValue::U32(u32::from_le_bytes(self.bytes())),
            6 => MetadataValue::I32(i32::from_le_bytes(self.bytes())),
            7 => MetadataValue::U64(u64::from_le_bytes(self.bytes())),
            8 => MetadataValue::I64(i64::from_le_bytes(self.bytes())),
            9 => MetadataValue::F32(f32::from_le_bytes(self.bytes())),
            10 => MetadataValue::F64(f64::from_le_bytes(self.bytes())),
            11 => MetadataValue::Bool(self.byte() & 1 == 1),
            12 => MetadataValue::String(self.string()),
            13 => MetadataValue::String(self.known()),
            _ => return None,
        })
    }

    /// An array of `count` scalars of one tag (a tag outside 1..=13 gives an empty u8 array).
    fn array(&mut self) -> MetadataArray {
        let tag = self.byte() % 16;
        let count = usize::from(self.byte());
        let mut values: Vec<MetadataValue> = (0..count).filter_map(|_| self.scalar(tag)).collect();
        macro_rules! collect {
            ($variant:ident) => {
                MetadataArray::$variant(
                    values
                        .drain(..)
                        .filter_map(|v| match v {
                            MetadataValue::$variant(x) => Some(x),
                            _ => None,
                        })
                        .collect(),
                )
            };
        }
        match tag {
            1 => collect!(U8),
            2 => collect!(I8),
            3 => collect!(U16),
            4 => collect!(I16),
            5 => collect!(U32),
            6 => collect!(I32),
            7 => collect!(U64),
            8 => collect!(I64),
            9 => collect!(F32),
            10 => collect!(F64),
            11 => collect!(Bool),
            12 | 13 => collect!(String),
            _ => MetadataArray::U8(Vec::new()),
        }
    }

    /// The value of one key, `None` when the key is absent.
    fn value(&mut self) -> Option<MetadataValue> {
        match self.byte() % 16 {
            0 => None,
            14 => Some(self.array().into()),
            15 => {
                let count = usize::from(self.byte());
                Some(MetadataArray::Array((0..count).map(|_| self.array()).collect()).into())
            }
            tag => self.scalar(tag),
        }
    }
}

/// One scratch file per fuzzing process (in memory where `/dev/shm` exists).
fn scratch() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("latte-fuzz-generation-{}.gguf", std::process::id()))
    })
}

fn check_dcae(json: &[u8]) {
    let Ok(json) = std::str::from_utf8(json) else {
        return;
    };
    match DcaeConfig::from_json(json) {
        Ok(c) => {
            assert!(c.image_channels > 0 && c.latent_channels > 0 && c.attention_head_dim > 0);
            assert!(!c.stages.is_empty());
            assert!(c.scaling_factor.is_finite() && c.scaling_factor > 0.0);
            for s in &c.stages {
                assert!(s.channels > 0 && s.channels <= 1 << 20);
                assert!(s.layers <= 1 << 20);
                assert!(s.qkv_multiscales.iter().all(|&k| k % 2 == 1 && k <= 63));
            }
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
}

fn check_flow(encoded: &[u8]) {
    let mut input = Input {
        data: encoded,
        at: 0,
    };
    let mut builder = GgufBuilder::new();
    for key in FLOW_KEYS {
        if let Some(value) = input.value() {
            builder
                .push_metadata(key, value)
                .expect("keys are distinct and arrays one level deep");
        }
    }
    let path = scratch();
    builder
        .create(path)
        .and_then(|w| w.finish())
        .expect("the metadata is written");
    let bytes = std::fs::read(path).expect("scratch read");
    let file = ModelFile::from_bytes("fuzz.gguf", bytes).expect("the written file reads back");
    let layout = GroupLayout::from_file(file.gguf());

    let config = match FlowConfig::from_file(&file) {
        Ok(config) => config,
        Err(e) => {
            // Messages must render for any input.
            std::hint::black_box(e.to_string());
            return;
        }
    };
    assert!(FlowConfig::present(&file));
    assert_eq!(config.validate(), Ok(()));
    let grid = config.grid();
    assert_eq!(grid * config.patch_size, config.latent_size);
    let tokens = config.image_tokens();
    let features = config.token_features();
    // Patchifying a latent gives back all of its values.
    assert_eq!(tokens * features, config.latent_len());
    assert_eq!(
        config.layers_per_group * config.group_count,
        config.layer_count
    );
    let mut next = 0;
    for group in 0..config.group_count {
        let layers = config.layers_of(group);
        assert_eq!(layers.start, next);
        assert_eq!(layers.len(), config.layers_per_group);
        next = layers.end;
    }
    assert_eq!(next, config.layer_count);
    let prompt = config.prompt_text("x");
    assert!(prompt.len() <= config.prompt_template.len() * 2);
    std::hint::black_box(config.prompt_text(""));
    match TimestepSchedule::new(
        config.num_steps,
        config.time_shift,
        &config.group_boundaries,
    ) {
        Ok(schedule) => {
            assert_eq!(schedule.steps(), config.num_steps);
            assert_eq!(schedule.group_count(), config.group_count);
            // The first and last steps (all of them for a real schedule; the loop stays short).
            let steps = schedule.steps();
            for i in (0..steps.min(64)).chain(steps.saturating_sub(64).max(64)..steps) {
                let (first, corrector) = schedule.step_groups(i, true);
                assert!(first < config.group_count);
                assert!(corrector.is_some_and(|g| g < config.group_count));
            }
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
    if let Ok(Some(layout)) = layout {
        assert_eq!(layout.group_count, config.group_count);
        assert_eq!(layout.layers_per_group, config.layers_per_group);
    }
}

fuzz_target!(|data: &[u8]| {
    let (json, encoded) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    check_dcae(json);
    check_flow(encoded);
});
