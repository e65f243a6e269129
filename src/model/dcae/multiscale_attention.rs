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
use super::scratch::{add_assign, grow, product, BufferSizes, DecoderScratch};
use super::weights::Conv;
use crate::backend::cpu::ops::gemm::GemmScratchSizes;
use crate::backend::cpu::ops::{relu_linear_attention, Conv2d};
use crate::model::{ModelError, ModelFile};

/// diffusers' `eps` of the attention's divisor.
const ATTENTION_EPS: f32 = 1e-15;

/// One multi-scale branch: depthwise `k×k`, then 1×1 grouped per head (`3·heads` groups).
struct ScaleBranch<'a> {
    proj_in: Conv<'a>,
    proj_out: Conv<'a>,
}

pub struct MultiscaleAttention<'a> {
    channels: usize,
    heads: usize,
    head_dim: usize,
    to_q: Conv<'a>,
    to_k: Conv<'a>,
    to_v: Conv<'a>,
    scales: Vec<ScaleBranch<'a>>,
    to_out: Conv<'a>,
    norm: ChannelNorm<'a>,
}

impl<'a> MultiscaleAttention<'a> {
    /// Loads `{name}.to_q/k/v`, `{name}.to_qkv_multiscale.{i}.proj_in/proj_out`, `{name}.to_out`
    /// and `{name}.norm_out`.
    pub fn load(
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
                        file,
                        &format!("{p}.proj_in"),
                        Conv2d {
                            groups: qkv,
                            ..Conv2d::same(qkv, qkv, k)
                        },
                        false,
                    )?,
                    proj_out: Conv::load(
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
        let projection = |p: &str| Conv::linear(file, &format!("{name}.{p}"), channels, inner);
        Ok(MultiscaleAttention {
            channels,
            heads,
            head_dim,
            to_q: projection("to_q")?,
            to_k: projection("to_k")?,
            to_v: projection("to_v")?,
            to_out: Conv::linear(
                file,
                &format!("{name}.to_out"),
                inner * (1 + scales.len()),
                channels,
            )?,
            scales,
            norm: ChannelNorm::load(file, &format!("{name}.norm_out"), norm, channels)?,
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
        // The op's scratch per head: relu(q), relu(k), V·Kᵀ with its key-sum row, the divisor.
        let per_head = product(&[2, d, p])?
            .checked_add(product(&[d + 1, d])?)?
            .checked_add(p)?;
        let mut conv = [&self.to_q, &self.to_k, &self.to_v, &self.to_out]
            .iter()
            .try_fold(Default::default(), |s: GemmScratchSizes, c| {
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
            attention: product(&[self.all_heads(), per_head])?,
            conv,
        })
    }

    /// `s.x` (`[channels, h, w]`) through the attention and its residual, in place.
    pub fn forward(&self, s: &mut DecoderScratch, hw: [usize; 2]) -> Result<(), ModelError> {
        let p = hw[0] * hw[1];
        let inner_len = self.heads * self.head_dim * p;
        let qkv_len = 3 * inner_len;
        let x = &mut s.x[..self.channels * p];
        let all = grow(&mut s.a, qkv_len * (1 + self.scales.len()));
        let (qkv, multiscale) = all.split_at_mut(qkv_len);
        {
            let (q, kv) = qkv.split_at_mut(inner_len);
            let (k, v) = kv.split_at_mut(inner_len);
            self.to_q.forward(x, hw, q, &mut s.conv)?;
            self.to_k.forward(x, hw, k, &mut s.conv)?;
            self.to_v.forward(x, hw, v, &mut s.conv)?;
        }
        for (branch, out) in self.scales.iter().zip(multiscale.chunks_exact_mut(qkv_len)) {
            let b = grow(&mut s.b, qkv_len);
            branch.proj_in.forward(qkv, hw, b, &mut s.conv)?;
            branch.proj_out.forward(b, hw, out, &mut s.conv)?;
        }
        let attended = grow(&mut s.b, inner_len * (1 + self.scales.len()));
        relu_linear_attention(
            all,
            self.all_heads(),
            self.head_dim,
            p,
            ATTENTION_EPS,
            attended,
            &mut s.attention,
        )?;
        let c = grow(&mut s.c, self.channels * p);
        self.to_out.forward(attended, hw, c, &mut s.conv)?;
        self.norm.apply(c)?;
        add_assign(x, c);
        Ok(())
    }
}
