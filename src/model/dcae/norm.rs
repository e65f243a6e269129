//! The decoder's channel normalisations over a `[C, H, W]` image, in place: diffusers' `RMSNorm`
//! applied channels-last (weight and bias, eps 1e-5) and eval-mode `nn.BatchNorm2d` (running
//! statistics, affine, eps 1e-5). This module owns the two norms' tensors; the arithmetic of
//! RMSNorm is the `rms_norm_channels` op's.

use std::borrow::Cow;

use rayon::prelude::*;

use super::config::NormType;
use super::weights::load_f32;
use crate::backend::cpu::ops::{kernels, rms_norm_channels, OpError};
use crate::model::{ModelError, ModelFile};

/// diffusers' eps for every DC-AE norm (`get_normalization` and the explicit `RMSNorm`s).
pub const NORM_EPS: f32 = 1e-5;

/// A loaded norm over `channels` channels.
pub enum ChannelNorm<'a> {
    Rms {
        weight: Cow<'a, [f32]>,
        bias: Cow<'a, [f32]>,
    },
    /// `(x − mean)/sqrt(var + eps)·weight + bias` per channel.
    Batch {
        mean: Cow<'a, [f32]>,
        inv_std: Vec<f32>,
        weight: Cow<'a, [f32]>,
        bias: Cow<'a, [f32]>,
    },
}

impl<'a> ChannelNorm<'a> {
    /// Loads `{name}.weight`, `{name}.bias` (and for batch norm `{name}.running_mean`,
    /// `{name}.running_var`).
    pub fn load(
        file: &'a ModelFile,
        name: &str,
        kind: NormType,
        channels: usize,
    ) -> Result<Self, ModelError> {
        let tensor = |suffix: &str| load_f32(file, &format!("{name}.{suffix}"), &[channels]);
        let weight = tensor("weight")?;
        let bias = tensor("bias")?;
        Ok(match kind {
            NormType::RmsNorm => ChannelNorm::Rms { weight, bias },
            NormType::BatchNorm => {
                let var = tensor("running_var")?;
                if let Some(bad) = var.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    return Err(file.invalid(format!(
                        "{name}.running_var holds {bad}, not a finite variance"
                    )));
                }
                ChannelNorm::Batch {
                    mean: tensor("running_mean")?,
                    inv_std: var.iter().map(|v| 1.0 / (v + NORM_EPS).sqrt()).collect(),
                    weight,
                    bias,
                }
            }
        })
    }

    pub fn channels(&self) -> usize {
        match self {
            ChannelNorm::Rms { weight, .. } | ChannelNorm::Batch { weight, .. } => weight.len(),
        }
    }

    /// Normalises `x` (`[channels, pixels]`) in place.
    pub fn apply(&self, x: &mut [f32]) -> Result<(), ModelError> {
        match self {
            ChannelNorm::Rms { weight, bias } => {
                rms_norm_channels(x, weight, Some(bias), NORM_EPS)?;
            }
            ChannelNorm::Batch {
                mean,
                inv_std,
                weight,
                bias,
            } => {
                let channels = weight.len();
                if channels == 0 || x.len() % channels != 0 {
                    return Err(ModelError::Op(OpError::Param {
                        op: "batch_norm",
                        reason: format!("{} values are not {channels} channel planes", x.len()),
                    }));
                }
                let pixels = x.len() / channels;
                if pixels == 0 {
                    return Ok(());
                }
                x.par_chunks_mut(pixels).enumerate().for_each(|(c, plane)| {
                    kernels::shift_scale(plane, mean[c], inv_std[c]);
                    let (w, b) = (weight[c], bias[c]);
                    plane.iter_mut().for_each(|v| *v = *v * w + b);
                });
            }
        }
        Ok(())
    }
}
