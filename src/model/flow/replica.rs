//! `Replica`: the velocity network `v(x_t, t | prompt K/V)` of a LaTtE-Flow file — patch embedding,
//! time embedding, a chosen run of replica layers with the TCRA residual reset at each group's first
//! layer, and the image head (tools/reference/README.md "Ends", "Groups").
//!
//! This module owns loading the replica and one velocity evaluation; it must not choose timesteps,
//! groups or guidance (that is `schedule` and `pipeline::sampler`) nor run the VLM.

use std::ops::Range;

use crate::backend::cpu::ops::rms_norm;
use crate::model::{Linear, ModelError, ModelFile};

use super::config::{FlowConfig, Tcra};
use super::layer::{LayerConditioning, LayerScratch, ReplicaLayer, TcraBlocks};
use super::prompt_kv::PromptKv;
use super::time_embedding::TimeEmbedding;

/// Patch embedding, time embedding and image head: shared (`flow.*`) or one set per group
/// (`flow.group.{k}.*`, switch `per_group_head`).
pub struct Ends<'a> {
    patch_embd: Linear<'a>,
    time_embedding: TimeEmbedding<'a>,
    head_norm: Vec<f32>,
    head: Linear<'a>,
}

impl<'a> Ends<'a> {
    fn load(file: &'a ModelFile, config: &FlowConfig, prefix: &str) -> Result<Self, ModelError> {
        let d = config.hidden;
        let features = config.token_features();
        Ok(Ends {
            patch_embd: Linear::load_pair(file, &format!("{prefix}patch_embd"), true, features, d)?,
            time_embedding: TimeEmbedding::load(file, prefix, config.time_freq_dim, d)?,
            head_norm: file.tensor_f32(&format!("{prefix}head_norm.weight"), &[d as u64])?,
            head: Linear::load_pair(file, &format!("{prefix}head"), true, d, features)?,
        })
    }
}

/// Everything that depends only on the evaluation time and the group: the time embedding and each
/// layer's gates. Computed once per time, shared by the conditional and unconditional passes.
#[derive(Debug, Default)]
pub struct StepConditioning {
    t: f32,
    group: usize,
    layers: Range<usize>,
    embedding: Vec<f32>,
    per_layer: Vec<LayerConditioning>,
}

impl StepConditioning {
    pub fn t(&self) -> f32 {
        self.t
    }

    pub fn group(&self) -> usize {
        self.group
    }

    pub fn layers(&self) -> Range<usize> {
        self.layers.clone()
    }
}

/// Working memory of velocity evaluations, reused across steps.
#[derive(Default)]
pub struct ReplicaScratch {
    layer: LayerScratch,
    tokens: Vec<f32>,
    hidden: Vec<f32>,
    head_out: Vec<f32>,
    blocks: [Vec<f32>; 2],
    features: Vec<f32>,
    inner: Vec<f32>,
}

/// One layer's output, for parity checks: the image hidden state after the layer and its TCRA block.
pub struct LayerTrace<'t> {
    pub layer: usize,
    /// `[N, D]`.
    pub hidden: &'t [f32],
    /// `[H, N, N]`, `None` when `tcra = none`.
    pub block: Option<&'t [f32]>,
}

/// The replica of a LaTtE-Flow file: its config, every layer and the ends.
pub struct Replica<'a> {
    config: FlowConfig,
    layers: Vec<ReplicaLayer<'a>>,
    ends: Vec<Ends<'a>>,
}

impl<'a> Replica<'a> {
    /// Reads the config and every replica tensor (views; only norms and biases are copied).
    pub fn load(file: &'a ModelFile) -> Result<Self, ModelError> {
        let config = FlowConfig::from_file(file)?;
        let layers = (0..config.layer_count)
            .map(|l| ReplicaLayer::load(file, &config, l))
            .collect::<Result<Vec<_>, _>>()?;
        let ends = if config.per_group_head {
            (0..config.group_count)
                .map(|k| Ends::load(file, &config, &format!("flow.group.{k}.")))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![Ends::load(file, &config, "flow.")?]
        };
        Ok(Replica {
            config,
            layers,
            ends,
        })
    }

    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    pub fn layer(&self, l: usize) -> Option<&ReplicaLayer<'a>> {
        self.layers.get(l)
    }

    fn ends(&self, group: usize) -> Result<&Ends<'a>, ModelError> {
        let index = if self.config.per_group_head { group } else { 0 };
        self.ends.get(index).ok_or_else(|| ModelError::Invalid {
            file: "replica".into(),
            what: format!(
                "group {group} out of range ({} groups)",
                self.config.group_count
            ),
        })
    }

    /// Fills `out` for time `t` and the given layers (the group's, or all for dense); `group` picks
    /// the time embedding under `per_group_head`.
    pub fn condition(
        &self,
        t: f32,
        group: usize,
        layers: Range<usize>,
        out: &mut StepConditioning,
        scratch: &mut ReplicaScratch,
    ) -> Result<(), ModelError> {
        self.check_layers(&layers)?;
        let ends = self.ends(group)?;
        let d = self.config.hidden;
        resize(&mut scratch.features, self.config.time_freq_dim);
        resize(&mut scratch.inner, d);
        resize(&mut out.embedding, d);
        ends.time_embedding.forward(
            t,
            &mut scratch.features,
            &mut scratch.inner,
            &mut out.embedding,
            &mut scratch.layer.matmul,
        )?;
        if out.per_layer.len() < self.layers.len() {
            out.per_layer
                .resize_with(self.layers.len(), Default::default);
        }
        for l in layers.clone() {
            self.layers[l].condition(&out.embedding, &mut out.per_layer[l], &mut scratch.layer)?;
        }
        out.t = t;
        out.group = group;
        out.layers = layers;
        Ok(())
    }

    fn check_layers(&self, layers: &Range<usize>) -> Result<(), ModelError> {
        if layers.start > layers.end || layers.end > self.layers.len() {
            return Err(ModelError::Invalid {
                file: "replica".into(),
                what: format!(
                    "layers {layers:?} out of range ({} layers)",
                    self.layers.len()
                ),
            });
        }
        Ok(())
    }

    /// `velocity = v(latent, t | prompt)` over the layers and group of `conditioning`. `latent` and
    /// `velocity` are `[C, S, S]`. `trace` sees each layer's output.
    pub fn velocity(
        &self,
        latent: &[f32],
        conditioning: &StepConditioning,
        prompt: &PromptKv,
        velocity: &mut [f32],
        scratch: &mut ReplicaScratch,
        mut trace: Option<&mut dyn FnMut(LayerTrace<'_>)>,
    ) -> Result<(), ModelError> {
        let config = &self.config;
        let latent_len = config.latent_len();
        if latent.len() != latent_len || velocity.len() != latent_len {
            return Err(ModelError::Invalid {
                file: "replica".into(),
                what: format!(
                    "latent of {} and velocity of {} values, expected {latent_len}",
                    latent.len(),
                    velocity.len()
                ),
            });
        }
        let ends = self.ends(conditioning.group)?;
        let n = config.image_tokens();
        let d = config.hidden;
        let features = config.token_features();
        let block_len = config.heads * n * n;
        resize(&mut scratch.tokens, n * features);
        resize(&mut scratch.hidden, n * d);
        resize(&mut scratch.head_out, n * features);
        for block in &mut scratch.blocks {
            resize(block, block_len);
        }

        patchify(config, latent, &mut scratch.tokens);
        ends.patch_embd.forward(
            &scratch.tokens,
            n,
            &mut scratch.hidden,
            &mut scratch.layer.matmul,
        )?;
        let mut previous_exists = false;
        for (step, l) in conditioning.layers.clone().enumerate() {
            // The residual resets at each group's first layer (also in dense mode).
            let first_in_group = l % config.layers_per_group == 0;
            let [previous, current] = &mut scratch.blocks;
            let (previous, current) = if step % 2 == 0 {
                (previous, current)
            } else {
                (current, previous)
            };
            let tcra = TcraBlocks {
                previous: (previous_exists && !first_in_group).then_some(&previous[..]),
                current: &mut current[..],
            };
            self.layers[l].forward(
                config,
                &mut scratch.hidden,
                n,
                &conditioning.per_layer[l],
                prompt.layer(l),
                prompt.image_rope(),
                tcra,
                &mut scratch.layer,
            )?;
            previous_exists = config.tcra != Tcra::None;
            if let Some(trace) = trace.as_mut() {
                trace(LayerTrace {
                    layer: l,
                    hidden: &scratch.hidden,
                    block: previous_exists.then_some(&current[..]),
                });
            }
        }
        rms_norm(&mut scratch.hidden, &ends.head_norm, config.rms_eps)?;
        let matmul = &mut scratch.layer.matmul;
        ends.head
            .forward(&scratch.hidden, n, &mut scratch.head_out, matmul)?;
        unpatchify(config, &scratch.head_out, velocity);
        Ok(())
    }
}

fn resize(buffer: &mut Vec<f32>, len: usize) {
    buffer.resize(len, 0.0);
}

/// `[C, S, S]` → tokens row-major over the `G × G` patch grid, features ordered `(c, py, px)`.
fn patchify(config: &FlowConfig, latent: &[f32], tokens: &mut [f32]) {
    let (c, s, p, g) = (
        config.latent_channels,
        config.latent_size,
        config.patch_size,
        config.grid(),
    );
    let features = c * p * p;
    for gy in 0..g {
        for gx in 0..g {
            let token = &mut tokens[(gy * g + gx) * features..][..features];
            for ch in 0..c {
                for py in 0..p {
                    for px in 0..p {
                        token[(ch * p + py) * p + px] =
                            latent[(ch * s + gy * p + py) * s + gx * p + px];
                    }
                }
            }
        }
    }
}

/// The inverse of [`patchify`].
fn unpatchify(config: &FlowConfig, tokens: &[f32], latent: &mut [f32]) {
    let (c, s, p, g) = (
        config.latent_channels,
        config.latent_size,
        config.patch_size,
        config.grid(),
    );
    let features = c * p * p;
    for gy in 0..g {
        for gx in 0..g {
            let token = &tokens[(gy * g + gx) * features..][..features];
            for ch in 0..c {
                for py in 0..p {
                    for px in 0..p {
                        latent[(ch * s + gy * p + py) * s + gx * p + px] =
                            token[(ch * p + py) * p + px];
                    }
                }
            }
        }
    }
}
