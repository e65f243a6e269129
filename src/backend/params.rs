//! The parameters of operations that every backend shares: convolution hyper-parameters, attention
//! shapes and masks, the TCRA score-bias mode, and the element-wise functions. Plain data: this
//! module must not compute anything beyond checking and deriving shapes.

use super::op_error::{check_len, checked_product, param, OpError};

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

    /// Checks the lengths of a call on an `hw` input (`[in, h, w]`), the weight, the output
    /// (`[out, oh, ow]`) and the bias, and returns `[oh, ow]`.
    pub fn check(
        &self,
        hw: [usize; 2],
        input: usize,
        weight: usize,
        out: usize,
        bias: Option<usize>,
    ) -> Result<[usize; 2], OpError> {
        const OP: &str = "conv2d";
        let [oh, ow] = self.output_hw(hw)?;
        check_len(
            OP,
            "input",
            checked_product(OP, &[self.in_channels, hw[0], hw[1]])?,
            input,
        )?;
        check_len(OP, "weight", self.weight_len()?, weight)?;
        check_len(
            OP,
            "out",
            checked_product(OP, &[self.out_channels, oh, ow])?,
            out,
        )?;
        if let Some(b) = bias {
            check_len(OP, "bias", self.out_channels, b)?;
        }
        Ok([oh, ow])
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
            && self.in_channels.is_multiple_of(self.groups)
            && self.out_channels.is_multiple_of(self.groups)
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

    /// Every channel convolved alone (`groups = in = out`): not a GEMM.
    pub fn is_depthwise(&self) -> bool {
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

impl AttentionShape {
    /// Checks the heads (query heads a positive multiple of KV heads) and the lengths of q
    /// `[n_q, H, d]`, k and v `[n_kv, H_kv, d]` and out (as q).
    pub fn check(&self, q: usize, k: usize, v: usize, out: usize) -> Result<(), OpError> {
        const OP: &str = "attention";
        let (h, hkv, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        if h == 0 || hkv == 0 || d == 0 || h % hkv != 0 {
            return Err(param(
                OP,
                format!(
                    "{h} query heads are not a positive multiple of {hkv} KV heads (head_dim {d})"
                ),
            ));
        }
        check_len(OP, "q", checked_product(OP, &[self.n_q, h, d])?, q)?;
        let kv = checked_product(OP, &[self.n_kv, hkv, d])?;
        check_len(OP, "k", kv, k)?;
        check_len(OP, "v", kv, v)?;
        check_len(OP, "out", q, out)
    }

    /// Checks a score block over key columns `col0 .. col0 + n_cols` and the lengths of its bias
    /// and readout arrays (`[H, n_q, n_cols]`) where given.
    pub fn check_block(
        &self,
        col0: usize,
        n_cols: usize,
        add: Option<usize>,
        readout: Option<usize>,
    ) -> Result<(), OpError> {
        const OP: &str = "attention";
        if col0.checked_add(n_cols).is_none_or(|end| end > self.n_kv) {
            return Err(param(
                OP,
                format!(
                    "bias block columns {col0}..{col0}+{n_cols} exceed {} keys",
                    self.n_kv
                ),
            ));
        }
        let block = checked_product(OP, &[self.n_heads, self.n_q, n_cols])?;
        if let Some(add) = add {
            check_len(OP, "bias add", block, add)?;
        }
        if let Some(readout) = readout {
            check_len(OP, "bias readout", block, readout)?;
        }
        Ok(())
    }
}

/// The resampling ops of the DC-AE decoder, for their shared shape checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// `[C, h, w] → [C, r·h, r·w]`.
    UpsampleNearest,
    /// `[C·r², h, w] → [C, r·h, r·w]` (`channels` counts the input's).
    PixelShuffle,
    /// `[C, h, w] → [C·r, h, w]`.
    RepeatChannels,
}

impl Resample {
    pub fn name(self) -> &'static str {
        match self {
            Resample::UpsampleNearest => "upsample_nearest",
            Resample::PixelShuffle => "pixel_shuffle",
            Resample::RepeatChannels => "repeat_channels",
        }
    }

    /// Checks factor `r`, the input `[channels, h, w]` and the output lengths.
    pub fn check(
        self,
        channels: usize,
        [h, w]: [usize; 2],
        r: usize,
        input: usize,
        out: usize,
    ) -> Result<(), OpError> {
        let op = self.name();
        if r == 0 {
            return Err(param(op, "factor must be positive"));
        }
        if self == Resample::PixelShuffle {
            let rr = r
                .checked_mul(r)
                .ok_or_else(|| param(op, "factor overflows"))?;
            if !channels.is_multiple_of(rr) {
                return Err(param(
                    op,
                    format!("{channels} channels are not a multiple of {r}²"),
                ));
            }
        }
        check_len(op, "input", checked_product(op, &[channels, h, w])?, input)?;
        let expected = match self {
            Resample::UpsampleNearest => checked_product(op, &[channels, h, r, w, r])?,
            Resample::PixelShuffle => input,
            Resample::RepeatChannels => checked_product(op, &[channels, r, h, w])?,
        };
        check_len(op, "out", expected, out)
    }
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
