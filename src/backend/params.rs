//! The parameters of operations that every backend shares: convolution hyper-parameters, attention
//! shapes and masks, the TCRA score-bias mode, and the element-wise functions. Plain data: this
//! module must not compute anything beyond checking and deriving shapes.

use super::op_error::{checked_product, param, OpError};

/// The hyper-parameters of a convolution, as `nn.Conv2d` has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]`, zeros on each side.
    pub padding: [usize; 2],
    pub groups: usize,
}

impl Conv2d {
    /// A `k×k` convolution, stride 1, padding `k/2` ("same" for odd k), one group.
    pub fn same(in_channels: usize, out_channels: usize, k: usize) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel: [k, k],
            stride: [1, 1],
            padding: [k / 2, k / 2],
            groups: 1,
        }
    }

    /// Elements of the weight tensor: `out · in/groups · kh · kw`.
    pub fn weight_len(&self) -> Result<usize, OpError> {
        self.validate()?;
        checked_product(
            "conv2d",
            &[
                self.out_channels,
                self.in_channels / self.groups,
                self.kernel[0],
                self.kernel[1],
            ],
        )
    }

    /// Output `[oh, ow]` for an input of `[h, w]`.
    pub fn output_hw(&self, hw: [usize; 2]) -> Result<[usize; 2], OpError> {
        self.validate()?;
        let mut out = [0; 2];
        for a in 0..2 {
            let padded = self.padding[a]
                .checked_mul(2)
                .and_then(|p| p.checked_add(hw[a]))
                .ok_or_else(|| param("conv2d", "padding overflows"))?;
            if padded < self.kernel[a] {
                return Err(param(
                    "conv2d",
                    format!(
                        "input {:?} with padding {:?} is smaller than the kernel {:?}",
                        hw, self.padding, self.kernel
                    ),
                ));
            }
            out[a] = (padded - self.kernel[a]) / self.stride[a] + 1;
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), OpError> {
        let ok = self.groups > 0
            && self.in_channels > 0
            && self.out_channels > 0
            && self.in_channels % self.groups == 0
            && self.out_channels % self.groups == 0
            && self.kernel.iter().all(|&k| k > 0)
            && self.stride.iter().all(|&s| s > 0);
        if ok {
            Ok(())
        } else {
            Err(param("conv2d", format!("invalid parameters {self:?}")))
        }
    }

    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    pub(crate) fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.groups == self.out_channels
    }
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub n_q: usize,
    pub n_kv: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// Which keys a query may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every query sees every key (bidirectional).
    None,
    /// Query `i` sees keys `j ≤ i + offset`.
    Causal { offset: usize },
}

/// Where the TCRA score-bias block is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasMode {
    /// To the scores, before the softmax.
    PreSoftmax,
    /// To the probabilities, after the softmax; rows are then renormalised.
    PostSoftmax,
}

/// An element-wise function applied in place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `x·σ(x)`.
    Silu,
    /// `x/2·(1 + erf(x/√2))`.
    GeluErf,
    /// GELU, tanh approximation.
    GeluTanh,
    /// `x·σ(1.702x)`.
    QuickGelu,
    Relu,
    /// `x·tanh(softplus(x))`.
    Mish,
    Tanh,
    /// `x + c`.
    Add(f32),
}
