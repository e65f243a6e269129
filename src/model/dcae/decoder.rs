//! The DC-AE decoder (diffusers 0.42 `AutoencoderDC.decoder`): latent `[C, h, w]` → image
//! `[3, H, W]`. `conv_in` (plus the channel-repeat shortcut), the stages from the narrowest
//! resolution up (each: an up-sampling block unless it is the last, then its ResBlocks or
//! EfficientViT blocks), `norm_out` (RMSNorm), the configured activation and `conv_out` (a 3×3
//! convolution, or an up-sampling block when stage 0 has no layers).
//!
//! Tensors are diffusers' `decoder.*` names with `decoder.` replaced by `dcae.`; the config is the
//! JSON under [`KEY_CONFIG_JSON`]. Channel counts that diffusers would only trip over at run time
//! (a stage fed the wrong width, a shortcut that cannot repeat evenly) are refused at load.

use super::config::{BlockType, DcaeConfig, NormType, KEY_CONFIG_JSON};
use super::efficient_vit::EfficientVitBlock;
use super::norm::ChannelNorm;
use super::res_block::ResBlock;
use super::scratch::{grow, product, BufferSizes, DecoderScratch};
use super::up_block::UpBlock;
use super::weights::Conv;
use crate::backend::cpu::{CpuBackend, CPU};
use crate::backend::{Backend, DeviceBuffer};
use crate::model::{ModelError, ModelFile};

/// The GGUF name prefix of the decoder's tensors.
const PREFIX: &str = "dcae";

enum Layer<'a, B: Backend> {
    Res(ResBlock<'a, B>),
    EfficientVit(Box<EfficientVitBlock<'a, B>>),
    Up(UpBlock<'a, B>),
}

impl<B: Backend> Layer<'_, B> {
    fn sizes(&self, hw: [usize; 2]) -> Option<BufferSizes> {
        match self {
            Layer::Res(l) => l.sizes(hw),
            Layer::EfficientVit(l) => l.sizes(hw),
            Layer::Up(l) => l.sizes(hw),
        }
    }

    fn forward(&self, s: &mut DecoderScratch<B>, hw: [usize; 2]) -> Result<(), ModelError> {
        match self {
            Layer::Res(l) => l.forward(s, hw),
            Layer::EfficientVit(l) => l.forward(s, hw),
            Layer::Up(l) => l.forward(s, hw),
        }
    }

    fn host_weight_bytes(&self) -> Option<u64> {
        match self {
            Layer::Res(l) => l.host_weight_bytes(),
            Layer::EfficientVit(l) => l.host_weight_bytes(),
            Layer::Up(l) => l.host_weight_bytes(),
        }
    }

    /// The resolution after this layer.
    fn out_hw(&self, hw: [usize; 2]) -> Option<[usize; 2]> {
        match self {
            Layer::Up(_) => Some([hw[0].checked_mul(2)?, hw[1].checked_mul(2)?]),
            _ => Some(hw),
        }
    }
}

/// The last layer: a plain 3×3 convolution, or an up-sampling block without shortcut.
enum ConvOut<'a, B: Backend> {
    Conv(Conv<'a, B>),
    Up(UpBlock<'a, B>),
}

/// A loaded decoder on backend `B` (on the CPU, F32 weights are borrowed from the file).
pub struct Decoder<'a, B: Backend = CpuBackend> {
    backend: &'a B,
    /// The file's name, for errors.
    file: String,
    config: DcaeConfig,
    conv_in: Conv<'a, B>,
    in_shortcut_repeats: Option<usize>,
    layers: Vec<Layer<'a, B>>,
    norm_channels: usize,
    norm_out: ChannelNorm<'a, B>,
    conv_out: ConvOut<'a, B>,
}

/// Everything a decode of one latent size needs, computed before any work.
struct Plan {
    buffers: BufferSizes,
    out_hw: [usize; 2],
}

impl<'a> Decoder<'a, CpuBackend> {
    /// [`Decoder::load_on`] the CPU.
    pub fn load(file: &'a ModelFile) -> Result<Self, ModelError> {
        Self::load_on(&CPU, file)
    }
}

impl<'a, B: Backend> Decoder<'a, B> {
    /// Reads the config key and every `dcae.*` tensor the config calls for.
    pub fn load_on(backend: &'a B, file: &'a ModelFile) -> Result<Self, ModelError> {
        let config = DcaeConfig::from_file(file)?;
        let stages = &config.stages;
        let n = stages.len();
        let top = stages[n - 1].channels;
        let conv_in = Conv::same(
            backend,
            file,
            &format!("{PREFIX}.conv_in"),
            [config.latent_channels, top],
            3,
            true,
        )?;
        let in_shortcut_repeats = if config.in_shortcut {
            let repeats = top / config.latent_channels;
            if repeats * config.latent_channels != top {
                return Err(file.invalid(format!(
                    "{KEY_CONFIG_JSON}: decoder_in_shortcut repeats {} latent channels, which does \
                     not divide the top stage's {top}",
                    config.latent_channels
                )));
            }
            Some(repeats)
        } else {
            None
        };

        let mut layers = Vec::new();
        let mut channels = top;
        for (i, stage) in stages.iter().enumerate().rev() {
            let name = |j: usize| format!("{PREFIX}.up_blocks.{i}.{j}");
            let mut j = 0;
            if i + 1 < n && stage.layers > 0 {
                let from = stages[i + 1].channels;
                if channels != from {
                    return Err(file.invalid(format!(
                        "{KEY_CONFIG_JSON}: stage {i} up-samples from {from} channels but receives \
                         {channels} (a stage with no layers in between)"
                    )));
                }
                let up = UpBlock::load(
                    backend,
                    file,
                    &name(0),
                    from,
                    stage.channels,
                    config.upsample,
                    true,
                )?;
                layers.push(Layer::Up(up));
                channels = stage.channels;
                j = 1;
            }
            for j in j..j + stage.layers {
                if channels != stage.channels {
                    return Err(file.invalid(format!(
                        "{KEY_CONFIG_JSON}: stage {i} works on {} channels but receives {channels}",
                        stage.channels
                    )));
                }
                layers.push(match stage.block_type {
                    BlockType::ResBlock => Layer::Res(ResBlock::load(
                        backend,
                        file,
                        &name(j),
                        channels,
                        stage.norm,
                        stage.activation,
                    )?),
                    BlockType::EfficientVitBlock => {
                        Layer::EfficientVit(Box::new(EfficientVitBlock::load(
                            backend,
                            file,
                            &name(j),
                            channels,
                            config.attention_head_dim,
                            &stage.qkv_multiscales,
                            stage.norm,
                        )?))
                    }
                });
            }
        }

        // diffusers: `block_out_channels[0] if layers_per_block[0] > 0 else block_out_channels[1]`.
        let norm_channels = if stages[0].layers > 0 || n == 1 {
            stages[0].channels
        } else {
            stages[1].channels
        };
        if norm_channels != channels {
            return Err(file.invalid(format!(
                "{KEY_CONFIG_JSON}: norm_out expects {norm_channels} channels, the last stage gives \
                 {channels}"
            )));
        }
        let norm_out = ChannelNorm::load(
            backend,
            file,
            &format!("{PREFIX}.norm_out"),
            NormType::RmsNorm,
            channels,
        )?;
        let name = format!("{PREFIX}.conv_out");
        let conv_out = if stages[0].layers > 0 {
            ConvOut::Conv(Conv::same(
                backend,
                file,
                &name,
                [channels, config.image_channels],
                3,
                true,
            )?)
        } else {
            ConvOut::Up(UpBlock::load(
                backend,
                file,
                &name,
                channels,
                config.image_channels,
                config.upsample,
                false,
            )?)
        };
        Ok(Decoder {
            backend,
            file: file.name().into(),
            config,
            conv_in,
            in_shortcut_repeats,
            layers,
            norm_channels: channels,
            norm_out,
            conv_out,
        })
    }

    pub fn config(&self) -> &DcaeConfig {
        &self.config
    }

    pub fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    pub fn scaling_factor(&self) -> f32 {
        self.config.scaling_factor
    }

    /// The image size `[H, W]` a `[C, h, w]` latent decodes to.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<[usize; 2], ModelError> {
        Ok(self.plan(h, w)?.out_hw)
    }

    /// Peak working memory of [`Decoder::decode_flow_latent`] for an `h×w` latent, in bytes: the
    /// scratch buffers at their high-water mark, the backend's working memory, the scaled latent
    /// and the returned image (weights not included: they are mapped, or resident since load).
    pub fn predicted_working_bytes(&self, h: usize, w: usize) -> Result<u64, ModelError> {
        let plan = self.plan(h, w)?;
        let image = product(&[self.config.image_channels, plan.out_hw[0], plan.out_hw[1]]);
        let latent = product(&[self.config.latent_channels, h, w]);
        let values = plan
            .buffers
            .total(self.backend.scratch_threads())
            .zip(image)
            .zip(latent)
            .and_then(|((b, i), l)| b.checked_add(i)?.checked_add(l));
        values
            .and_then(|v| (v as u64).checked_mul(4))
            .ok_or_else(|| self.too_large(h, w))
    }

    /// Host bytes of the convolution weights beyond the file: what the backend packed or
    /// converted at load (on the CPU, every dense kernel's packed copy and every depthwise kernel
    /// not stored as F32).
    pub fn conv_weight_host_bytes(&self) -> Result<u64, ModelError> {
        let conv_out = match &self.conv_out {
            ConvOut::Conv(conv) => conv.host_bytes(),
            ConvOut::Up(up) => up.host_weight_bytes(),
        };
        let layers = self.layers.iter().try_fold(0u64, |sum, layer| {
            sum.checked_add(layer.host_weight_bytes()?)
        });
        self.conv_in
            .host_bytes()
            .zip(conv_out)
            .zip(layers)
            .and_then(|((a, b), c)| a.checked_add(b)?.checked_add(c))
            .ok_or_else(|| ModelError::Invalid {
                file: self.file.clone(),
                what: "DC-AE: its weights' sizes overflow".into(),
            })
    }

    fn too_large(&self, h: usize, w: usize) -> ModelError {
        ModelError::Invalid {
            file: self.file.clone(),
            what: format!("DC-AE: a {h}×{w} latent is too large to decode"),
        }
    }

    fn plan(&self, h: usize, w: usize) -> Result<Plan, ModelError> {
        if h == 0 || w == 0 {
            return Err(ModelError::Invalid {
                file: self.file.clone(),
                what: format!("DC-AE: latent size {h}×{w} is empty"),
            });
        }
        let plan = || -> Option<Plan> {
            let p = product(&[h, w])?;
            let conv_in = product(&[self.conv_in.out_channels(), p])?;
            // The latent is uploaded into `c`; a plain `conv_out` writes the image into `a`.
            let mut buffers = BufferSizes {
                x: conv_in,
                a: if self.in_shortcut_repeats.is_some() {
                    conv_in
                } else {
                    0
                },
                c: product(&[self.config.latent_channels, p])?,
                conv: self.conv_in.scratch_sizes([h, w])?,
                ..BufferSizes::default()
            };
            let mut hw = [h, w];
            for layer in &self.layers {
                buffers = buffers.max(layer.sizes(hw)?);
                hw = layer.out_hw(hw)?;
            }
            let out_hw = match &self.conv_out {
                ConvOut::Conv(conv) => {
                    buffers.conv = buffers.conv.max(conv.scratch_sizes(hw)?);
                    let image = product(&[self.config.image_channels, hw[0], hw[1]])?;
                    buffers.a = buffers.a.max(image);
                    hw
                }
                ConvOut::Up(up) => {
                    buffers = buffers.max(up.sizes(hw)?);
                    [hw[0].checked_mul(2)?, hw[1].checked_mul(2)?]
                }
            };
            // Every buffer's total must stay addressable.
            buffers.total(self.backend.scratch_threads())?;
            Some(Plan { buffers, out_hw })
        };
        plan().ok_or_else(|| self.too_large(h, w))
    }

    /// diffusers' `AutoencoderDC.decode(latent)`: `latent` is `[C, h, w]` as the autoencoder's
    /// encoder produces it (not scaled), the result `[3, H, W]` unclamped.
    pub fn decode(
        &self,
        latent: &[f32],
        h: usize,
        w: usize,
        scratch: &mut DecoderScratch<B>,
    ) -> Result<Vec<f32>, ModelError> {
        let bk = self.backend;
        let plan = self.plan(h, w)?;
        let c = self.config.latent_channels;
        if product(&[c, h, w]) != Some(latent.len()) {
            return Err(ModelError::Invalid {
                file: self.file.clone(),
                what: format!(
                    "DC-AE: the latent holds {} values, not {c}×{h}×{w} (channels × height × width)",
                    latent.len()
                ),
            });
        }
        let s = scratch;
        let hw = [h, w];
        let top = self.conv_in.out_channels() * h * w;
        let latent_len = latent.len();
        grow(bk, &mut s.c, latent_len)?;
        bk.write(s.c.slice_mut(..latent_len), latent)?;
        grow(bk, &mut s.x, top)?;
        self.conv_in
            .forward(s.c.slice(..latent_len), hw, s.x.slice_mut(..top))?;
        if let Some(repeats) = self.in_shortcut_repeats {
            grow(bk, &mut s.a, top)?;
            bk.repeat_channels(
                s.c.slice(..latent_len),
                c,
                hw,
                repeats,
                s.a.slice_mut(..top),
            )?;
            bk.add(s.x.slice_mut(..top), s.a.slice(..top))?;
        }
        let mut hw = hw;
        for layer in &self.layers {
            layer.forward(s, hw)?;
            hw = layer.out_hw(hw).unwrap_or(hw);
        }
        let x = ..self.norm_channels * hw[0] * hw[1];
        self.norm_out.apply(s.x.slice_mut(x))?;
        if let Some(f) = self.config.conv_activation.unary() {
            bk.unary(s.x.slice_mut(x), f)?;
        }
        let [oh, ow] = plan.out_hw;
        let n = self.config.image_channels * oh * ow;
        let mut image = vec![0f32; n];
        match &self.conv_out {
            ConvOut::Conv(conv) => {
                grow(bk, &mut s.a, n)?;
                conv.forward(s.x.slice(x), hw, s.a.slice_mut(..n))?;
                bk.read(s.a.slice(..n), &mut image)?;
            }
            ConvOut::Up(up) => {
                up.forward(s, hw)?;
                bk.read(s.x.slice(..n), &mut image)?;
            }
        }
        Ok(image)
    }

    /// The generation rule (MODEL.md §6): `clamp(decode(latent / scaling_factor), −1, 1)` for a
    /// flow latent `[C, h, w]`; the image is `[3, H, W]` in `[−1, 1]`.
    pub fn decode_flow_latent(
        &self,
        latent: &[f32],
        h: usize,
        w: usize,
        scratch: &mut DecoderScratch<B>,
    ) -> Result<Vec<f32>, ModelError> {
        let scale = self.config.scaling_factor;
        let scaled: Vec<f32> = latent.iter().map(|v| v / scale).collect();
        let mut image = self.decode(&scaled, h, w, scratch)?;
        image.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
        Ok(image)
    }
}
