//! The decoder's channel normalisations over a `[C, H, W]` image, in place: diffusers' `RMSNorm`
//! applied channels-last (weight and bias, eps 1e-5) and eval-mode `nn.BatchNorm2d` (running
//! statistics, affine, eps 1e-5). This module owns the two norms' tensors; the arithmetic is the
//! backend's `rms_norm_channels` and `batch_norm`.

use super::config::NormType;
use super::weights::{load_f32, load_vector};
use crate::backend::{Backend, DeviceBuffer, SliceMut};
use crate::model::{ModelError, ModelFile};

/// diffusers' eps for every DC-AE norm (`get_normalization` and the explicit `RMSNorm`s).
pub const NORM_EPS: f32 = 1e-5;

enum Kind<B: Backend> {
    Rms {
        weight: B::Buffer,
        bias: B::Buffer,
    },
    /// `(x − mean)/sqrt(var + eps)·weight + bias` per channel.
    Batch {
        mean: B::Buffer,
        inv_std: B::Buffer,
        weight: B::Buffer,
        bias: B::Buffer,
    },
}

/// A loaded norm over `channels` channels.
pub struct ChannelNorm<'a, B: Backend> {
    backend: &'a B,
    channels: usize,
    kind: Kind<B>,
}

impl<'a, B: Backend> ChannelNorm<'a, B> {
    /// Loads `{name}.weight`, `{name}.bias` (and for batch norm `{name}.running_mean`,
    /// `{name}.running_var`).
    pub fn load(
        backend: &'a B,
        file: &ModelFile,
        name: &str,
        kind: NormType,
        channels: usize,
    ) -> Result<Self, ModelError> {
        let tensor =
            |suffix: &str| load_vector(backend, file, &format!("{name}.{suffix}"), &[channels]);
        let weight = tensor("weight")?;
        let bias = tensor("bias")?;
        let kind = match kind {
            NormType::RmsNorm => Kind::Rms { weight, bias },
            NormType::BatchNorm => {
                let var = load_f32(file, &format!("{name}.running_var"), &[channels])?;
                if let Some(bad) = var.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    return Err(file.invalid(format!(
                        "{name}.running_var holds {bad}, not a finite variance"
                    )));
                }
                let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + NORM_EPS).sqrt()).collect();
                Kind::Batch {
                    mean: tensor("running_mean")?,
                    inv_std: backend.upload_owned(inv_std)?,
                    weight,
                    bias,
                }
            }
        };
        Ok(ChannelNorm {
            backend,
            channels,
            kind,
        })
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Normalises `x` (`[channels, pixels]`) in place.
    pub fn apply(&self, x: SliceMut<'_, B::Buffer>) -> Result<(), ModelError> {
        let b = self.backend;
        match &self.kind {
            Kind::Rms { weight, bias } => {
                b.rms_norm_channels(x, weight.all(), Some(bias.all()), NORM_EPS)?
            }
            Kind::Batch {
                mean,
                inv_std,
                weight,
                bias,
            } => b.batch_norm(x, mean.all(), inv_std.all(), weight.all(), bias.all())?,
        }
        Ok(())
    }
}
