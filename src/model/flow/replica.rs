//! `Replica`: the velocity network `v(x_t, t | prompt K/V)` of a LaTtE-Flow file — patch embedding,
//! time embedding, a chosen run of replica layers with the TCRA residual reset at each group's first
//! layer, and the image head (tools/reference/README.md "Ends", "Groups").
//!
//! This module owns loading the replica and one velocity evaluation; it must not choose timesteps,
//! groups or guidance (that is `schedule` and `pipeline::sampler`) nor run the VLM.

use std::ops::Range;

use crate::backend::cpu::{CpuBackend, CPU};
use crate::backend::{ensure_len, Backend, DeviceBuffer, Placement};
use crate::model::{Linear, ModelError, ModelFile};

use super::config::{FlowConfig, Tcra};
use super::layer::{LayerConditioning, LayerScratch, ReplicaLayer, TcraBlocks};
use super::prompt_kv::PromptKv;
use super::time_embedding::{TimeEmbedding, TimeScratch};

/// Patch embedding, time embedding and image head: shared (`flow.*`) or one set per group
/// (`flow.group.{k}.*`, switch `per_group_head`).
pub struct Ends<'a, B: Backend> {
    patch_embd: Linear<'a, B>,
    time_embedding: TimeEmbedding<'a, B>,
    head_norm: B::Buffer,
    head: Linear<'a, B>,
}

impl<'a, B: Backend> Ends<'a, B> {
    fn load(
        backend: &'a B,
        file: &'a ModelFile,
        config: &FlowConfig,
        prefix: &str,
        placement: Placement,
    ) -> Result<Self, ModelError> {
        let d = config.hidden;
        let features = config.token_features();
        let linear = |name: &str, shape: [usize; 2]| {
            Linear::load_pair(
                backend,
                file,
                &format!("{prefix}{name}"),
                true,
                shape,
                placement,
            )
        };
        let head_norm = file.tensor_f32(&format!("{prefix}head_norm.weight"), &[d as u64])?;
        Ok(Ends {
            patch_embd: linear("patch_embd", [features, d])?,
            time_embedding: TimeEmbedding::load(
                backend,
                file,
                prefix,
                config.time_freq_dim,
                d,
                placement,
            )?,
            head_norm: backend.upload_owned(head_norm)?,
            head: linear("head", [d, features])?,
        })
    }

    fn weights(&self) -> impl Iterator<Item = &B::Weight<'a>> {
        [self.patch_embd.weight(), self.head.weight()]
            .into_iter()
            .chain(self.time_embedding.weights())
    }
}

/// Everything that depends only on the evaluation time and the group: the time embedding and each
/// layer's gates. Computed once per time, shared by the conditional and unconditional passes.
pub struct StepConditioning<B: Backend = CpuBackend> {
    t: f32,
    group: usize,
    layers: Range<usize>,
    embedding: B::Buffer,
    per_layer: Vec<LayerConditioning<B>>,
}

impl<B: Backend> Default for StepConditioning<B> {
    fn default() -> Self {
        StepConditioning {
            t: 0.0,
            group: 0,
            layers: 0..0,
            embedding: Default::default(),
            per_layer: Vec::new(),
        }
    }
}

impl<B: Backend> StepConditioning<B> {
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
pub struct ReplicaScratch<B: Backend = CpuBackend> {
    layer: LayerScratch<B>,
    time: TimeScratch<B>,
    host_tokens: Vec<f32>,
    tokens: B::Buffer,
    hidden: B::Buffer,
    head_out: B::Buffer,
    blocks: [B::Buffer; 2],
    /// Host copies for [`LayerTrace`]s.
    trace_hidden: Vec<f32>,
    trace_block: Vec<f32>,
}

impl<B: Backend> Default for ReplicaScratch<B> {
    fn default() -> Self {
        ReplicaScratch {
            layer: Default::default(),
            time: Default::default(),
            host_tokens: Vec::new(),
            tokens: Default::default(),
            hidden: Default::default(),
            head_out: Default::default(),
            blocks: Default::default(),
            trace_hidden: Vec::new(),
            trace_block: Vec::new(),
        }
    }
}

/// One layer's output for one pass, for parity checks: the image hidden state after the layer and
/// its TCRA block.
pub struct LayerTrace<'t> {
    pub layer: usize,
    /// Which of the evaluation's prompts.
    pub pass: usize,
    /// `[N, D]`.
    pub hidden: &'t [f32],
    /// `[H, N, N]`, `None` when `tcra = none`.
    pub block: Option<&'t [f32]>,
}

/// The replica of a LaTtE-Flow file: its config, every layer and the ends, on backend `B`.
pub struct Replica<'a, B: Backend = CpuBackend> {
    backend: &'a B,
    config: FlowConfig,
    layers: Vec<ReplicaLayer<'a, B>>,
    ends: Vec<Ends<'a, B>>,
}

impl<'a> Replica<'a, CpuBackend> {
    /// [`Replica::load_on`] the CPU.
    pub fn load(file: &'a ModelFile) -> Result<Self, ModelError> {
        Self::load_on(&CPU, file)
    }
}

impl<'a, B: Backend> Replica<'a, B> {
    /// Reads the config and prepares every replica tensor on `backend`: layer matrices (and
    /// per-group ends) placed in their expert group, the shared ends resident.
    pub fn load_on(backend: &'a B, file: &'a ModelFile) -> Result<Self, ModelError> {
        let config = FlowConfig::from_file(file)?;
        let layers = (0..config.layer_count)
            .map(|l| ReplicaLayer::load(backend, file, &config, l))
            .collect::<Result<Vec<_>, _>>()?;
        let ends = if config.per_group_head {
            (0..config.group_count)
                .map(|k| {
                    let prefix = format!("flow.group.{k}.");
                    Ends::load(backend, file, &config, &prefix, Placement::Group(k))
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![Ends::load(
                backend,
                file,
                &config,
                "flow.",
                Placement::Shared,
            )?]
        };
        Ok(Replica {
            backend,
            config,
            layers,
            ends,
        })
    }

    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    pub fn backend(&self) -> &'a B {
        self.backend
    }

    pub fn layer(&self, l: usize) -> Option<&ReplicaLayer<'a, B>> {
        self.layers.get(l)
    }

    /// The matrices expert group `group` holds: its layers' and, with per-group ends, its ends'.
    pub fn group_weights(&self, group: usize) -> Vec<&B::Weight<'a>> {
        let m = self.config.layers_per_group;
        let layers = self
            .layers
            .iter()
            .skip(group * m)
            .take(m)
            .flat_map(ReplicaLayer::weights);
        let ends = self
            .config
            .per_group_head
            .then(|| self.ends.get(group))
            .flatten()
            .into_iter()
            .flat_map(Ends::weights);
        layers.chain(ends).collect()
    }

    fn ends(&self, group: usize) -> Result<&Ends<'a, B>, ModelError> {
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
        out: &mut StepConditioning<B>,
        scratch: &mut ReplicaScratch<B>,
    ) -> Result<(), ModelError> {
        self.check_layers(&layers)?;
        let ends = self.ends(group)?;
        let d = self.config.hidden;
        ensure_len(self.backend, &mut out.embedding, d)?;
        ends.time_embedding
            .forward(t, out.embedding.slice_mut(..d), &mut scratch.time)?;
        if out.per_layer.len() < self.layers.len() {
            out.per_layer
                .resize_with(self.layers.len(), Default::default);
        }
        for l in layers.clone() {
            self.layers[l].condition(
                out.embedding.slice(..d),
                &mut out.per_layer[l],
                &mut scratch.layer,
            )?;
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

    /// `v(latent, t | prompt)` over the layers and group of `conditioning`, for each of `prompts` at
    /// once (the guidance passes share one latent): `velocity` holds one host `[C, S, S]` per prompt,
    /// in order, and `latent` is host `[C, S, S]`. The passes run as one batch of rows through every
    /// product, so each weight is read once per evaluation. `trace` sees each layer's output, per
    /// pass.
    pub fn velocity(
        &self,
        latent: &[f32],
        conditioning: &StepConditioning<B>,
        prompts: &[&PromptKv<B>],
        velocity: &mut [f32],
        scratch: &mut ReplicaScratch<B>,
        mut trace: Option<&mut dyn FnMut(LayerTrace<'_>)>,
    ) -> Result<(), ModelError> {
        let b = self.backend;
        let config = &self.config;
        let latent_len = config.latent_len();
        let passes = prompts.len();
        if passes == 0 || latent.len() != latent_len || velocity.len() != passes * latent_len {
            return Err(ModelError::Invalid {
                file: "replica".into(),
                what: format!(
                    "latent of {} and velocity of {} values for {passes} prompts, expected \
                     {latent_len} and {latent_len} per prompt (at least one)",
                    latent.len(),
                    velocity.len()
                ),
            });
        }
        let ends = self.ends(conditioning.group)?;
        let n = config.image_tokens();
        let rows = passes * n;
        let d = config.hidden;
        let features = config.token_features();
        let block_len = config.heads * n * n;
        let s = scratch;
        ensure_len(b, &mut s.tokens, rows * features)?;
        ensure_len(b, &mut s.hidden, rows * d)?;
        ensure_len(b, &mut s.head_out, rows * features)?;
        for block in &mut s.blocks {
            ensure_len(b, block, passes * block_len)?;
        }

        // Every pass starts from the same tokens.
        s.host_tokens.resize(n * features, 0.0);
        patchify(config, latent, &mut s.host_tokens);
        for pass in 0..passes {
            let own = pass * n * features..(pass + 1) * n * features;
            b.write(s.tokens.slice_mut(own), &s.host_tokens)?;
        }
        ends.patch_embd.forward(
            s.tokens.slice(..rows * features),
            rows,
            s.hidden.slice_mut(..rows * d),
        )?;
        let mut previous_exists = false;
        for (step, l) in conditioning.layers.clone().enumerate() {
            // The residual resets at each group's first layer (also in dense mode).
            let first_in_group = l % config.layers_per_group == 0;
            let [first, second] = &mut s.blocks;
            let (previous, current) = if step % 2 == 0 {
                (first, second)
            } else {
                (second, first)
            };
            let all_blocks = ..passes * block_len;
            let tcra = TcraBlocks {
                previous: (previous_exists && !first_in_group).then(|| previous.slice(all_blocks)),
                current: current.slice_mut(all_blocks),
            };
            self.layers[l].forward(
                config,
                s.hidden.slice_mut(..rows * d),
                n,
                &conditioning.per_layer[l],
                prompts,
                tcra,
                &mut s.layer,
            )?;
            previous_exists = config.tcra != Tcra::None;
            if let Some(trace) = trace.as_mut() {
                s.trace_hidden.resize(rows * d, 0.0);
                b.read(s.hidden.slice(..rows * d), &mut s.trace_hidden)?;
                if previous_exists {
                    s.trace_block.resize(passes * block_len, 0.0);
                    b.read(current.slice(all_blocks), &mut s.trace_block)?;
                }
                for pass in 0..passes {
                    trace(LayerTrace {
                        layer: l,
                        pass,
                        hidden: &s.trace_hidden[pass * n * d..][..n * d],
                        block: previous_exists
                            .then(|| &s.trace_block[pass * block_len..][..block_len]),
                    });
                }
            }
        }
        b.rms_norm(
            s.hidden.slice_mut(..rows * d),
            ends.head_norm.all(),
            config.rms_eps,
        )?;
        ends.head.forward(
            s.hidden.slice(..rows * d),
            rows,
            s.head_out.slice_mut(..rows * features),
        )?;
        s.host_tokens.resize(rows * features, 0.0);
        b.read(s.head_out.slice(..rows * features), &mut s.host_tokens)?;
        for (tokens, velocity) in s
            .host_tokens
            .chunks_exact(n * features)
            .zip(velocity.chunks_exact_mut(latent_len))
        {
            unpatchify(config, tokens, velocity);
        }
        Ok(())
    }
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
