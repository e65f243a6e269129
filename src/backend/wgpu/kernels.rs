//! The catalogue of WGSL kernels (`kernels/wgsl/`): which source files make up each kernel, its
//! entry point and its storage bindings. WGSL has no includes or generics, so a kernel's source is
//! the concatenation of `common.wgsl`, for weight-reading kernels the snippet that decodes one GGUF
//! type, the operand snippet and the kernel body.
//!
//! This module is plain data: it creates no pipelines (the device does, lazily) and is what the
//! naga test validates and translates to MSL, SPIR-V and HLSL for every kernel.

use crate::backend::Unary;
use crate::dtype::TensorType;

macro_rules! wgsl {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/wgsl/", $name))
    };
}

const COMMON: &str = wgsl!("common.wgsl");

/// The weight types the GPU kernels decode; the same set the CPU computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q5_0,
    Q4_1,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 11] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q5_0,
        WeightFormat::Q4_1,
        WeightFormat::Q5_1,
        WeightFormat::Q4K,
        WeightFormat::Q5K,
        WeightFormat::Q6K,
    ];

    pub fn of(ty: TensorType) -> Option<Self> {
        use TensorType as T;
        Some(match ty {
            T::F32 => WeightFormat::F32,
            T::F16 => WeightFormat::F16,
            T::BF16 => WeightFormat::BF16,
            T::Q8_0 => WeightFormat::Q8_0,
            T::Q4_0 => WeightFormat::Q4_0,
            T::Q5_0 => WeightFormat::Q5_0,
            T::Q4_1 => WeightFormat::Q4_1,
            T::Q5_1 => WeightFormat::Q5_1,
            T::Q4_K => WeightFormat::Q4K,
            T::Q5_K => WeightFormat::Q5K,
            T::Q6_K => WeightFormat::Q6K,
            _ => return None,
        })
    }

    /// How activations are rounded before the product, as the CPU's dot partner rounds them.
    pub fn partner(self) -> Partner {
        use WeightFormat as W;
        match self {
            W::F32 => Partner::F32,
            W::F16 => Partner::F16,
            W::BF16 => Partner::BF16,
            // Q8_1 rounds its quants exactly as Q8_0 does (it only adds a block sum).
            W::Q8_0 | W::Q4_0 | W::Q5_0 | W::Q4_1 | W::Q5_1 => Partner::Q8_0,
            W::Q4K | W::Q5K | W::Q6K => Partner::Q8K,
        }
    }

    fn snippet(self) -> String {
        let scales = wgsl!("weights/scales.wgsl");
        let kquant = wgsl!("weights/kquant.wgsl");
        use WeightFormat as W;
        let parts: &[&str] = match self {
            W::F32 => &[wgsl!("weights/f32.wgsl")],
            W::F16 => &[wgsl!("weights/f16.wgsl")],
            W::BF16 => &[wgsl!("weights/bf16.wgsl")],
            W::Q8_0 => &[scales, wgsl!("weights/q8_0.wgsl")],
            W::Q4_0 => &[scales, wgsl!("weights/q4_0.wgsl")],
            W::Q5_0 => &[scales, wgsl!("weights/q5_0.wgsl")],
            W::Q4_1 => &[scales, wgsl!("weights/q4_1.wgsl")],
            W::Q5_1 => &[scales, wgsl!("weights/q5_1.wgsl")],
            W::Q4K => &[scales, kquant, wgsl!("weights/q4_k.wgsl")],
            W::Q5K => &[scales, kquant, wgsl!("weights/q5_k.wgsl")],
            W::Q6K => &[scales, wgsl!("weights/q6_k.wgsl")],
        };
        parts.concat()
    }
}

/// The activation rounding of a matmul (see `quantize.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Partner {
    F32,
    F16,
    BF16,
    Q8_0,
    Q8K,
}

/// The element-wise functions of `elementwise.wgsl` (the constant of `Unary::Add` travels in the
/// parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryKernel {
    Silu,
    GeluErf,
    GeluTanh,
    QuickGelu,
    Relu,
    Mish,
    Tanh,
    Add,
}

impl UnaryKernel {
    pub fn of(f: Unary) -> Self {
        match f {
            Unary::Silu => UnaryKernel::Silu,
            Unary::GeluErf => UnaryKernel::GeluErf,
            Unary::GeluTanh => UnaryKernel::GeluTanh,
            Unary::QuickGelu => UnaryKernel::QuickGelu,
            Unary::Relu => UnaryKernel::Relu,
            Unary::Mish => UnaryKernel::Mish,
            Unary::Tanh => UnaryKernel::Tanh,
            Unary::Add(_) => UnaryKernel::Add,
        }
    }

    const ALL: [UnaryKernel; 8] = [
        UnaryKernel::Silu,
        UnaryKernel::GeluErf,
        UnaryKernel::GeluTanh,
        UnaryKernel::QuickGelu,
        UnaryKernel::Relu,
        UnaryKernel::Mish,
        UnaryKernel::Tanh,
        UnaryKernel::Add,
    ];
}

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

use Access::{Read as R, ReadWrite as W};

/// Every kernel the backend dispatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Unary(UnaryKernel),
    Swiglu,
    Add,
    AddGatedRows,
    ModulateRows,
    RmsNorm,
    LayerNorm,
    RmsNormChannels,
    BatchNorm,
    Rope,
    UpsampleNearest,
    PixelShuffle,
    RepeatChannels,
    Quantize(Partner),
    MatmulTiled(WeightFormat),
    Matvec(WeightFormat),
    /// `Matvec` with subgroup reductions (devices with the SUBGROUP feature).
    MatvecSubgroup(WeightFormat),
    ConvTiled(WeightFormat),
    ConvDepthwise(WeightFormat),
    AttentionScores,
    AttentionSoftmax,
    AttentionValues,
    LinearAttentionKv,
    LinearAttentionOut,
}

impl Kernel {
    /// Every kernel, every variant (for validation).
    pub fn all() -> Vec<Kernel> {
        let mut all: Vec<Kernel> = UnaryKernel::ALL.iter().map(|&u| Kernel::Unary(u)).collect();
        all.extend([
            Kernel::Swiglu,
            Kernel::Add,
            Kernel::AddGatedRows,
            Kernel::ModulateRows,
            Kernel::RmsNorm,
            Kernel::LayerNorm,
            Kernel::RmsNormChannels,
            Kernel::BatchNorm,
            Kernel::Rope,
            Kernel::UpsampleNearest,
            Kernel::PixelShuffle,
            Kernel::RepeatChannels,
            Kernel::AttentionScores,
            Kernel::AttentionSoftmax,
            Kernel::AttentionValues,
            Kernel::LinearAttentionKv,
            Kernel::LinearAttentionOut,
        ]);
        for p in [Partner::F16, Partner::BF16, Partner::Q8_0, Partner::Q8K] {
            all.push(Kernel::Quantize(p));
        }
        for f in WeightFormat::ALL {
            all.extend([
                Kernel::MatmulTiled(f),
                Kernel::Matvec(f),
                Kernel::MatvecSubgroup(f),
                Kernel::ConvTiled(f),
                Kernel::ConvDepthwise(f),
            ]);
        }
        all
    }

    /// The kernel's complete WGSL source.
    pub fn source(&self) -> String {
        let body: String = match self {
            Kernel::Unary(_)
            | Kernel::Swiglu
            | Kernel::Add
            | Kernel::AddGatedRows
            | Kernel::ModulateRows => wgsl!("elementwise.wgsl").into(),
            Kernel::RmsNorm | Kernel::LayerNorm | Kernel::RmsNormChannels | Kernel::BatchNorm => {
                wgsl!("norm.wgsl").into()
            }
            Kernel::Rope => wgsl!("rope.wgsl").into(),
            Kernel::UpsampleNearest | Kernel::PixelShuffle | Kernel::RepeatChannels => {
                wgsl!("resample.wgsl").into()
            }
            Kernel::Quantize(_) => wgsl!("quantize.wgsl").into(),
            Kernel::MatmulTiled(f) => [
                f.snippet().as_str(),
                wgsl!("matmul_io.wgsl"),
                wgsl!("gemm_tiled.wgsl"),
            ]
            .concat(),
            Kernel::Matvec(f) => [
                f.snippet().as_str(),
                wgsl!("matmul_io.wgsl"),
                wgsl!("matvec.wgsl"),
            ]
            .concat(),
            Kernel::MatvecSubgroup(f) => [
                f.snippet().as_str(),
                wgsl!("matmul_io.wgsl"),
                wgsl!("matvec.wgsl"),
                wgsl!("matvec_subgroup.wgsl"),
            ]
            .concat(),
            Kernel::ConvTiled(f) => [
                f.snippet().as_str(),
                wgsl!("conv_io.wgsl"),
                wgsl!("gemm_tiled.wgsl"),
            ]
            .concat(),
            Kernel::ConvDepthwise(f) => [
                f.snippet().as_str(),
                wgsl!("conv_io.wgsl"),
                wgsl!("conv_depthwise.wgsl"),
            ]
            .concat(),
            Kernel::AttentionScores => {
                [wgsl!("attention.wgsl"), wgsl!("attention_scores.wgsl")].concat()
            }
            Kernel::AttentionSoftmax => {
                [wgsl!("attention.wgsl"), wgsl!("attention_softmax.wgsl")].concat()
            }
            Kernel::AttentionValues => {
                [wgsl!("attention.wgsl"), wgsl!("attention_values.wgsl")].concat()
            }
            Kernel::LinearAttentionKv | Kernel::LinearAttentionOut => {
                wgsl!("linear_attention.wgsl").into()
            }
        };
        [COMMON, "\n", &body].concat()
    }

    pub fn entry_point(&self) -> &'static str {
        match self {
            Kernel::Unary(u) => match u {
                UnaryKernel::Silu => "unary_silu",
                UnaryKernel::GeluErf => "unary_gelu_erf",
                UnaryKernel::GeluTanh => "unary_gelu_tanh",
                UnaryKernel::QuickGelu => "unary_quick_gelu",
                UnaryKernel::Relu => "unary_relu",
                UnaryKernel::Mish => "unary_mish",
                UnaryKernel::Tanh => "unary_tanh",
                UnaryKernel::Add => "unary_add",
            },
            Kernel::Swiglu => "swiglu",
            Kernel::Add => "add",
            Kernel::AddGatedRows => "add_gated_rows",
            Kernel::ModulateRows => "modulate_rows",
            Kernel::RmsNorm => "rms_norm",
            Kernel::LayerNorm => "layer_norm",
            Kernel::RmsNormChannels => "rms_norm_channels",
            Kernel::BatchNorm => "batch_norm",
            Kernel::Rope => "rope_neox",
            Kernel::UpsampleNearest => "upsample_nearest",
            Kernel::PixelShuffle => "pixel_shuffle",
            Kernel::RepeatChannels => "repeat_channels",
            Kernel::Quantize(p) => match p {
                Partner::Q8_0 => "q8_0",
                Partner::Q8K => "q8_k",
                Partner::F16 => "f16",
                Partner::BF16 => "bf16",
                // No kernel: f32 activations are used as they are.
                Partner::F32 => "none",
            },
            Kernel::MatmulTiled(_) | Kernel::ConvTiled(_) => "gemm_tiled",
            Kernel::Matvec(_) => "matvec",
            Kernel::MatvecSubgroup(_) => "matvec_subgroup",
            Kernel::ConvDepthwise(_) => "conv_depthwise",
            Kernel::AttentionScores => "attention_scores",
            Kernel::AttentionSoftmax => "attention_softmax",
            Kernel::AttentionValues => "attention_values",
            Kernel::LinearAttentionKv => "linear_attention_kv",
            Kernel::LinearAttentionOut => "linear_attention_out",
        }
    }

    /// Whether the kernel needs the device's SUBGROUP feature (naga's capability of that name).
    pub fn needs_subgroups(&self) -> bool {
        matches!(self, Kernel::MatvecSubgroup(_))
    }

    /// The storage bindings 1, 2, … (binding 0 is the parameter block).
    pub fn bindings(&self) -> &'static [Access] {
        match self {
            Kernel::Unary(_) => &[W],
            Kernel::Swiglu | Kernel::Add => &[W, R],
            Kernel::AddGatedRows | Kernel::ModulateRows => &[W, R, R],
            Kernel::RmsNorm | Kernel::LayerNorm | Kernel::RmsNormChannels => &[W, R, R],
            Kernel::BatchNorm => &[W, R, R, R, R],
            Kernel::Rope => &[W, R],
            Kernel::UpsampleNearest | Kernel::PixelShuffle | Kernel::RepeatChannels => &[R, W],
            Kernel::Quantize(_) => &[R, W],
            Kernel::MatmulTiled(_)
            | Kernel::Matvec(_)
            | Kernel::MatvecSubgroup(_)
            | Kernel::ConvTiled(_)
            | Kernel::ConvDepthwise(_) => &[R, R, W, R],
            Kernel::AttentionScores => &[R, R, W],
            Kernel::AttentionSoftmax => &[W, R, R, W],
            Kernel::AttentionValues => &[R, R, W],
            Kernel::LinearAttentionKv | Kernel::LinearAttentionOut => &[R, W, W],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_computable_type_has_a_format_and_kernels() {
        for ty in TensorType::COMPUTABLE {
            assert!(WeightFormat::of(ty).is_some(), "{ty}");
        }
        let all = Kernel::all();
        assert_eq!(all.len(), 8 + 17 + 4 + 5 * WeightFormat::ALL.len());
        for k in all {
            assert!(
                k.source().contains(&format!("fn {}(", k.entry_point())),
                "{k:?}"
            );
        }
    }
}
