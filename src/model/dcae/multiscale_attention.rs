//! diffusers' `SanaMultiscaleLinearAttention` as DC-AE's EfficientViT block configures it
//! (`mult` 1, residual): q, k, v projections (bias-free `nn.Linear` over channels, here 1×1
//! convolutions), one extra q/k/v image per multi-scale kernel (a depthwise k×k convolution then a
//! 1×1 convolution grouped per head), ReLU linear attention over all of them, the output projection,
//! the stage's norm, plus the input.
//!
//! diffusers chooses quadratic attention when `H·W ≤ head_dim`; it is the same quantity associated
//! differently, which the `relu_linear_attention` op computes for both (see its docs).

use super::config::NormType;
use super::norm::ChannelNorm;
use super::scratch::{grow, product, BufferSizes, DecoderScratch};
use super::weights::{host_bytes, Conv};
use crate::backend::{Backend, Conv2d, DeviceBuffer, ScratchSizes};
use crate::model::{ModelError, ModelFile};

/// diffusers' `eps` of the attention's divisor.
const ATTENTION_EPS: f32 = 1e-15;

/// One multi-scale branch: depthwise `k×k`, then 1×1 grouped per head (`3·heads` groups).
struct ScaleBranch<'a, B: Backend> {
    proj_in: Conv<'a, B>,
    proj_out: Conv<'a, B>,
}

pub struct MultiscaleAttention<'a, B: Backend> {
    backend: &'a B,
    channels: usize,
    heads: usize,
    head_dim: usize,
    to_q: Conv<'a, B>,
    to_k: Conv<'a, B>,
    to_v: Conv<'a, B>,
    scales: Vec<ScaleBranch<'a, B>>,
    to_out: Conv<'a, B>,
    norm: ChannelNorm<'a, B>,
}

impl<'a, B: Backend> MultiscaleAttention<'a, B> {
    /// Host bytes of its convolution weights beyond the file (`None` on overflow).
    pub fn host_weight_bytes(&self) -> Option<u64> {
        let mut convs = vec![&self.to_q, &self.to_k, &self.to_v, &self.to_out];
        for branch in &self.scales {
            convs.extend([&branch.proj_in, &branch.proj_out]);
        }
        host_bytes(&convs)
    }
    /// Loads `{name}.to_q/k/v`, `{name}.to_qkv_multiscale.{i}.proj_in/proj_out`, `{name}.to_out`
    /// and `{name}.norm_out`.
    pub fn load(
        backend: &'a B,
        file: &'a ModelFile,
        name: &str,
        channels: usize,
        head_dim: usize,
        kernel_sizes: &[usize],
        norm: NormType,
    ) -> Result<Self, ModelError> {
        // diffusers: `int(in_channels // attention_head_dim * mult)` heads with mult = 1.
        let heads = channels / head_dim;
        if heads == 0 {
            return Err(file.invalid(format!(
                "{name}: {channels} channels hold no attention head of {head_dim}"
            )));
        }
        let inner = heads * head_dim;
        let qkv = 3 * inner;
        let scales = kernel_sizes
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let p = format!("{name}.to_qkv_multiscale.{i}");
                Ok(ScaleBranch {
                    proj_in: Conv::load(
                        backend,
                        file,
                        &format!("{p}.proj_in"),
                        Conv2d {
                            groups: qkv,
                            ..Conv2d::same(qkv, qkv, k)
                        },
                        false,
                    )?,
                    proj_out: Conv::load(
                        backend,
                        file,
                        &format!("{p}.proj_out"),
                        Conv2d {
                            groups: 3 * heads,
                            ..Conv2d::same(qkv, qkv, 1)
                        },
                        false,
                    )?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let projection =
            |p: &str| Conv::linear(backend, file, &format!("{name}.{p}"), [channels, inner]);
        Ok(MultiscaleAttention {
            backend,
            channels,
            heads,
            head_dim,
            to_q: projection("to_q")?,
            to_k: projection("to_k")?,
            to_v: projection("to_v")?,
            to_out: Conv::linear(
                backend,
                file,
                &format!("{name}.to_out"),
                [inner * (1 + scales.len()), channels],
            )?,
            scales,
            norm: ChannelNorm::load(backend, file, &format!("{name}.norm_out"), norm, channels)?,
        })
    }

    /// Heads over all branches (each branch's q/k/v image is split into `heads` heads).
    fn all_heads(&self) -> usize {
        self.heads * (1 + self.scales.len())
    }

    pub fn sizes(&self, hw: [usize; 2]) -> Option<BufferSizes> {
        let p = product(hw.as_slice())?;
        let (d, branches) = (self.head_dim, 1 + self.scales.len());
        let qkv = product(&[3, self.heads, d, p])?;
        let attention_out = product(&[branches, self.heads, d, p])?;
        let attention = self
            .backend
            .linear_attention_scratch(self.all_heads(), d, p)?;
        let mut conv = [&self.to_q, &self.to_k, &self.to_v, &self.to_out]
            .iter()
            .try_fold(Default::default(), |s: ScratchSizes, c| {
                Some(s.max(c.scratch_sizes(hw)?))
            })?;
        for branch in &self.scales {
            conv = conv
                .max(branch.proj_in.scratch_sizes(hw)?)
                .max(branch.proj_out.scratch_sizes(hw)?);
        }
        Some(BufferSizes {
            x: product(&[self.channels, p])?,
            a: product(&[branches, qkv])?,
            b: attention_out.max(if self.scales.is_empty() { 0 } else { qkv }),
            c: product(&[self.channels, p])?,
            attention,
            conv,
        })
    }

    /// `s.x` (`[channels, h, w]`) through the attention and its residual, in place.
    pub fn forward(&self, s: &mut DecoderScratch<B>, hw: [usize; 2]) -> Result<(), ModelError> {
        let bk = self.backend;
        let p = hw[0] * hw[1];
        let inner_len = self.heads * self.head_dim * p;
        let qkv_len = 3 * inner_len;
        let branches = 1 + self.scales.len();
        let x = ..self.channels * p;
        grow(bk, &mut s.a, qkv_len * branches)?;
        self.to_q
            .forward(s.x.slice(x), hw, s.a.slice_mut(..inner_len))?;
        self.to_k
            .forward(s.x.slice(x), hw, s.a.slice_mut(inner_len..2 * inner_len))?;
        self.to_v
            .forward(s.x.slice(x), hw, s.a.slice_mut(2 * inner_len..qkv_len))?;
        if !self.scales.is_empty() {
            grow(bk, &mut s.b, qkv_len)?;
        }
        for (i, branch) in self.scales.iter().enumerate() {
            branch
                .proj_in
                .forward(s.a.slice(..qkv_len), hw, s.b.slice_mut(..qkv_len))?;
            let out = (i + 1) * qkv_len..(i + 2) * qkv_len;
            branch
                .proj_out
                .forward(s.b.slice(..qkv_len), hw, s.a.slice_mut(out))?;
        }
        let attended = inner_len * branches;
        grow(bk, &mut s.b, attended)?;
        bk.relu_linear_attention(
            s.a.slice(..qkv_len * branches),
            self.all_heads(),
            self.head_dim,
            p,
            ATTENTION_EPS,
            s.b.slice_mut(..attended),
        )?;
        grow(bk, &mut s.c, self.channels * p)?;
        self.to_out
            .forward(s.b.slice(..attended), hw, s.c.slice_mut(x))?;
        self.norm.apply(s.c.slice_mut(x))?;
        bk.add(s.x.slice_mut(x), s.c.slice(x))?;
        Ok(())
    }
}
