//! llama-quantize's mixtures ("file types" such as Q4_K_M): a base type for the weights, with
//! more bits where a tensor is known to be sensitive. The rules are those of llama.cpp's
//! `llama_tensor_get_type_impl` (src/llama-quant.cpp) for the mixtures whose types latte has
//! kernels for, without an importance matrix, for a dense model with one KV-head group per
//! layer (no experts, not Falcon, not a 70B):
//!
//! | rule | Q4_K_S | Q4_K_M | Q5_K_S | Q5_K_M | Q6_K | Q8_0 | Q4_0 … Q5_1 |
//! |---|---|---|---|---|---|---|---|
//! | weights (base) | Q4_K | Q4_K | Q5_K | Q5_K | Q6_K | Q8_0 | the type |
//! | `output.weight`, and `token_embd.weight` when tied (no `output.weight`) | Q6_K | Q6_K | Q6_K | Q6_K | Q6_K | Q8_0 | Q6_K |
//! | `attn_v.weight` (or a fused `attn_qkv.weight`) of layer i of n | Q5_K if i < 4 | Q6_K if more bits(i, n) | base | Q6_K if more bits(i, n) | base | base | base |
//! | `ffn_down` of layer i of n | Q5_K if i < n/8 | Q6_K if more bits(i, n) | base | Q6_K if more bits(i, n) | base | base | base |
//!
//! (llama.cpp also has a Q5_K / Q6_K rule for `attn_qkv`, but its branch sits after the
//! `attn_v`-like branch that already takes fused QKV tensors, so it never applies.)
//!
//! "more bits(i, n)" is llama.cpp's `use_more_bits`: i < n/8, or i ≥ 7n/8, or (i − n/8) mod 3 = 2.
//! When a tied embedding's row length is not a multiple of the base type's block, it gets Q8_0.
//!
//! Where the rules apply in a latte file: the text decoder (`blk.N.*`, `token_embd`, `output`)
//! exactly as llama-quantize on a Qwen2 text model; the flow replica (`flow.blk.N.*`, a copy of
//! the text decoder's layers) with the same per-layer rules over its own layers; the vision
//! tower (`v.*`, `mm.*`) and the DC-AE decoder (`dcae.*`) at the base type (llama.cpp quantizes
//! its vision projector with one type too; llama-quantize would leave a Qwen2-VL patch embedding
//! unquantized, latte gives it the base type as `--type` does). Tensors of one dimension stay F32, integer tensors
//! are copied, `--tensor-type` rules override the mixture, and a row that does not fit a type's
//! block falls back as llama-quantize does (`quantize::fallback_type`).
//!
//! Q2_K and Q3_K mixtures (Q2_K, Q3_K_S, Q3_K_M, Q3_K_L) exist in llama.cpp but need the Q2_K /
//! Q3_K types, which latte has no quantizer or kernels for: they are refused by name.

use crate::dtype::TensorType;

/// One of llama-quantize's mixtures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mixture {
    /// One type for every weight but the output (Q4_0, Q4_1, Q5_0, Q5_1, Q6_K, Q8_0, and F16 /
    /// BF16 / F32, which llama-quantize does not mix at all).
    Plain(TensorType),
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
}

/// llama-quantize's names (and its aliases `Q4_K` → Q4_K_M, `Q5_K` → Q5_K_M), with llama.cpp's
/// `llama_ftype` numbers stored as `general.file_type`.
const MIXTURES: [(&str, Mixture, u32); 15] = [
    ("Q4_0", Mixture::Plain(TensorType::Q4_0), 2),
    ("Q4_1", Mixture::Plain(TensorType::Q4_1), 3),
    ("Q5_0", Mixture::Plain(TensorType::Q5_0), 8),
    ("Q5_1", Mixture::Plain(TensorType::Q5_1), 9),
    ("Q8_0", Mixture::Plain(TensorType::Q8_0), 7),
    ("Q6_K", Mixture::Plain(TensorType::Q6_K), 18),
    ("Q4_K_S", Mixture::Q4KS, 14),
    ("Q4_K_M", Mixture::Q4KM, 15),
    ("Q4_K", Mixture::Q4KM, 15),
    ("Q5_K_S", Mixture::Q5KS, 16),
    ("Q5_K_M", Mixture::Q5KM, 17),
    ("Q5_K", Mixture::Q5KM, 17),
    ("F16", Mixture::Plain(TensorType::F16), 1),
    ("BF16", Mixture::Plain(TensorType::BF16), 32),
    ("F32", Mixture::Plain(TensorType::F32), 0),
];

/// llama-quantize names that need a type latte cannot compute.
const UNSUPPORTED: [&str; 5] = ["Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L"];

impl Mixture {
    /// The mixture called `name` (any case), `Err(true)` for a llama-quantize name that latte
    /// cannot make, `Err(false)` for an unknown name.
    pub fn from_name(name: &str) -> Result<(Mixture, u32), bool> {
        let upper = name.to_ascii_uppercase();
        if let Some(&(_, mixture, file_type)) = MIXTURES.iter().find(|(n, ..)| *n == upper) {
            return Ok((mixture, file_type));
        }
        Err(UNSUPPORTED.contains(&upper.as_str()))
    }

    /// Every accepted name, for messages and `--help`.
    pub fn names() -> String {
        MIXTURES
            .iter()
            .map(|(n, ..)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The type of weights no rule singles out.
    pub fn base(self) -> TensorType {
        match self {
            Mixture::Plain(ty) => ty,
            Mixture::Q4KS | Mixture::Q4KM => TensorType::Q4_K,
            Mixture::Q5KS | Mixture::Q5KM => TensorType::Q5_K,
        }
    }

    /// The type llama-quantize gives the weight `name` (2+ dimensions, rows of `row_len`
    /// values) in a file whose shape is `layers`, before the block-size fallback.
    pub fn type_of(self, name: &str, row_len: u64, layers: &LayerCounts) -> TensorType {
        let base = self.base();
        // llama-quantize mixes quantized types only: F16, BF16 and F32 files are uniform.
        if !base.is_quantized() {
            return base;
        }
        let is_output =
            name == "output.weight" || (layers.tied_embeddings && name == "token_embd.weight");
        if is_output {
            return if !row_len.is_multiple_of(base.block_size() as u64) {
                TensorType::Q8_0
            } else if base == TensorType::Q8_0 {
                base
            } else {
                TensorType::Q6_K
            };
        }
        let Some((layer, count)) = layers.layer_of(name) else {
            return base;
        };
        let more_bits = use_more_bits(layer, count);
        // llama.cpp's `category_is_attn_v`: V, fused QKV and MLA's KV-b projections.
        let attn_v = ["attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"]
            .iter()
            .any(|n| name.contains(n));
        match self {
            Mixture::Plain(_) | Mixture::Q5KS => base,
            Mixture::Q4KS if attn_v && layer < 4 => TensorType::Q5_K,
            Mixture::Q4KS if name.contains("ffn_down") && layer < count / 8 => TensorType::Q5_K,
            Mixture::Q4KS => base,
            Mixture::Q4KM | Mixture::Q5KM if (attn_v || name.contains("ffn_down")) && more_bits => {
                TensorType::Q6_K
            }
            Mixture::Q4KM | Mixture::Q5KM => base,
        }
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// layer between.
fn use_more_bits(layer: usize, count: usize) -> bool {
    layer < count / 8 || layer >= 7 * count / 8 || (layer as i64 - (count / 8) as i64) % 3 == 2
}

/// The shape the per-layer rules need: layers of the text decoder and of the flow replica, and
/// whether the token embedding is also the output projection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerCounts {
    pub text_layers: usize,
    pub flow_layers: usize,
    pub tied_embeddings: bool,
}

impl LayerCounts {
    /// Read from a file's (or a plan's) tensor names.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> LayerCounts {
        let mut counts = LayerCounts {
            tied_embeddings: true,
            ..LayerCounts::default()
        };
        for name in names {
            if name == "output.weight" {
                counts.tied_embeddings = false;
            }
            if let Some(i) = layer_index(name, "blk.") {
                counts.text_layers = counts.text_layers.max(i + 1);
            } else if let Some(i) = layer_index(name, "flow.blk.") {
                counts.flow_layers = counts.flow_layers.max(i + 1);
            }
        }
        counts
    }

    /// The layer of a text-decoder or flow-replica tensor, and its stack's layer count.
    fn layer_of(&self, name: &str) -> Option<(usize, usize)> {
        if let Some(i) = layer_index(name, "blk.") {
            return Some((i, self.text_layers.max(i + 1)));
        }
        layer_index(name, "flow.blk.").map(|i| (i, self.flow_layers.max(i + 1)))
    }
}

/// N in `{prefix}N.…`.
fn layer_index(name: &str, prefix: &str) -> Option<usize> {
    let rest = name.strip_prefix(prefix)?;
    let (index, _) = rest.split_once('.')?;
    index.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(layers: usize) -> LayerCounts {
        LayerCounts {
            text_layers: layers,
            flow_layers: layers,
            tied_embeddings: true,
        }
    }

    #[test]
    fn names_and_aliases_follow_llama_quantize() {
        assert_eq!(Mixture::from_name("q4_k_m"), Ok((Mixture::Q4KM, 15)));
        assert_eq!(Mixture::from_name("Q4_K"), Ok((Mixture::Q4KM, 15)));
        assert_eq!(Mixture::from_name("Q5_K_S"), Ok((Mixture::Q5KS, 16)));
        assert_eq!(
            Mixture::from_name("Q8_0"),
            Ok((Mixture::Plain(TensorType::Q8_0), 7))
        );
        assert_eq!(Mixture::from_name("Q3_K_M"), Err(true));
        assert_eq!(Mixture::from_name("Q9_X"), Err(false));
    }

    /// The Q4_K_M types of a 28-layer model (Qwen2-VL-2B's text decoder), layer by layer, as
    /// llama.cpp's rules give them: more bits on layers 0–2, 5, 8, …, 23 and 24–27.
    #[test]
    fn q4_k_m_gives_more_bits_where_llama_quantize_does() {
        let layers = text(28);
        let six_k: Vec<usize> = (0..28)
            .filter(|&i| {
                Mixture::Q4KM.type_of(&format!("blk.{i}.ffn_down.weight"), 8960, &layers)
                    == TensorType::Q6_K
            })
            .collect();
        assert_eq!(six_k, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
        for i in 0..28 {
            let v = Mixture::Q4KM.type_of(&format!("blk.{i}.attn_v.weight"), 1536, &layers);
            let down = Mixture::Q4KM.type_of(&format!("blk.{i}.ffn_down.weight"), 8960, &layers);
            assert_eq!(v, down, "layer {i}");
            let q = Mixture::Q4KM.type_of(&format!("blk.{i}.attn_q.weight"), 1536, &layers);
            assert_eq!(q, TensorType::Q4_K);
            // The replica's layers follow the same rule.
            let flow = Mixture::Q4KM.type_of(&format!("flow.blk.{i}.attn_v.weight"), 1536, &layers);
            assert_eq!(flow, v, "flow layer {i}");
        }
        assert_eq!(
            Mixture::Q4KM.type_of("token_embd.weight", 1536, &layers),
            TensorType::Q6_K
        );
        assert_eq!(
            Mixture::Q4KM.type_of("v.blk.0.attn_v.weight", 1280, &layers),
            TensorType::Q4_K
        );
    }

    #[test]
    fn small_and_plain_mixtures() {
        let layers = text(16);
        let q4ks = |name: &str| Mixture::Q4KS.type_of(name, 2048, &layers);
        assert_eq!(q4ks("blk.3.attn_v.weight"), TensorType::Q5_K);
        assert_eq!(q4ks("blk.4.attn_v.weight"), TensorType::Q4_K);
        assert_eq!(q4ks("blk.1.ffn_down.weight"), TensorType::Q5_K);
        assert_eq!(q4ks("blk.2.ffn_down.weight"), TensorType::Q4_K);
        let q4_0 = Mixture::Plain(TensorType::Q4_0);
        assert_eq!(
            q4_0.type_of("blk.0.ffn_down.weight", 2048, &layers),
            TensorType::Q4_0
        );
        assert_eq!(
            q4_0.type_of("token_embd.weight", 2048, &layers),
            TensorType::Q6_K
        );
        // A tied embedding whose rows do not fit the base block: Q8_0, as llama.cpp.
        assert_eq!(
            q4_0.type_of("token_embd.weight", 100, &layers),
            TensorType::Q8_0
        );
        let untied = LayerCounts {
            tied_embeddings: false,
            ..text(16)
        };
        assert_eq!(
            q4_0.type_of("token_embd.weight", 2048, &untied),
            TensorType::Q4_0
        );
        assert_eq!(
            q4_0.type_of("output.weight", 2048, &untied),
            TensorType::Q6_K
        );
        let q8 = Mixture::Plain(TensorType::Q8_0);
        assert_eq!(q8.type_of("output.weight", 2048, &untied), TensorType::Q8_0);
        let f16 = Mixture::Plain(TensorType::F16);
        assert_eq!(f16.type_of("output.weight", 2048, &untied), TensorType::F16);
    }

    #[test]
    fn layer_counts_come_from_the_names() {
        let counts = LayerCounts::of([
            "token_embd.weight",
            "blk.0.attn_q.weight",
            "blk.27.ffn_down.weight",
            "flow.blk.6.attn_v.weight",
            "v.blk.31.attn_v.weight",
        ]);
        assert_eq!(
            counts,
            LayerCounts {
                text_layers: 28,
                flow_layers: 7,
                tied_embeddings: true
            }
        );
    }
}
