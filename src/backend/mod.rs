//! Compute backends: where a model's buffers and weights live and where its operations run. The
//! models are written once against [`Backend`]; the CPU kernels are one implementation
//! ([`cpu::CpuBackend`]), wgpu (Vulkan, Metal, DX12; feature `wgpu`) another.
//!
//! The interface, in the style of ggml-backend's buffers and candle's op list:
//! - **Buffers** are f32 arrays owned by the backend ([`Backend::Buffer`]); ops read [`Slice`]s
//!   and write [`SliceMut`]s of them (caller-owned outputs, no allocation per op). Host data
//!   crosses with [`Backend::upload`] / [`Backend::write`] / [`Backend::read`].
//! - **Weights** are prepared once from a tensor of the mapped file ([`Backend::weight`]), in any
//!   computable type, with a [`Placement`]: shared weights stay resident for the model's life;
//!   weights of an expert group live in a *group slot* and are usable only while their group is
//!   resident ([`Backend::stage_group`] on any thread, then [`Backend::commit_group`];
//!   [`Backend::release_group`]). The CPU computes from the mapped file, where residency is the
//!   page cache's (`crate::residency`), so these are no-ops there.
//! - **Ops** are the operations the models need: quantized matrix products (activations converted
//!   to the weight type's dot partner, as ggml does), norms, RoPE, attention with GQA, masks and
//!   the TCRA score block, activations, and the DC-AE decoder's convolutions and resampling.
//!   Shapes are checked by every backend; a bad shape is an [`OpError`], never a panic or an
//!   out-of-bounds access on any device.
//!
//! Work may run asynchronously: [`Backend::read`] and [`Backend::synchronize`] wait for it.
//!
//! Data flows one way: a backend knows tensors and quant formats, never a model.

pub mod buffer;
pub mod choice;
pub mod cpu;
pub mod error;
pub mod op_error;
pub mod params;
pub mod shape_only;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use buffer::{DeviceBuffer, Slice, SliceMut};
pub use choice::DeviceChoice;
pub use error::BackendError;
pub use op_error::OpError;
pub use params::{AttentionShape, BiasMode, Conv2d, Mask, Unary};

use crate::backend::cpu::ops::RopeTable;
use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// Where a weight lives while a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Resident as long as the weight exists.
    Shared,
    /// Part of expert group `k`: resident only while the group is committed to a slot.
    Group(usize),
}

/// A bias added to a block of attention score columns, and the block read out (TCRA, MODEL.md §5).
/// Arrays are `[n_heads, n_q, n_cols]`; the block covers key columns `col0 .. col0 + n_cols`.
pub struct ScoreBlock<'b, T> {
    pub mode: BiasMode,
    pub col0: usize,
    pub n_cols: usize,
    /// `add[h] = gate[h] · previous[h]`, or none (a group's first layer).
    pub add: Option<GatedScores<'b, T>>,
    /// Receives the block after the bias: scores (pre-softmax) or renormalised probabilities
    /// (post-softmax); masked entries read out as 0.
    pub readout: Option<SliceMut<'b, T>>,
}

/// The previous layer's score block `[n_heads, n_q, n_cols]` and one gate per head.
pub struct GatedScores<'b, T> {
    pub previous: Slice<'b, T>,
    pub gate: Slice<'b, T>,
}

/// Internal working memory an operation grows to, in f32 values: `shared` once, and `per_thread`
/// for each of the backend's worker threads (memory plans add these up before anything runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchSizes {
    pub shared: usize,
    pub per_thread: usize,
}

impl ScratchSizes {
    /// The element-wise maximum: enough for both operations.
    pub fn max(self, o: Self) -> Self {
        ScratchSizes {
            shared: self.shared.max(o.shared),
            per_thread: self.per_thread.max(o.per_thread),
        }
    }

    /// Values held with `threads` worker threads, `None` on overflow.
    pub fn total(self, threads: usize) -> Option<usize> {
        self.per_thread
            .checked_mul(threads)?
            .checked_add(self.shared)
    }
}

/// Device memory a backend has allocated (bytes), now and at its peak since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    pub allocated: u64,
    pub peak: u64,
}

/// The operations and memory a model needs. See the module docs for the contract.
pub trait Backend: Sync {
    /// An f32 array on the device.
    type Buffer: DeviceBuffer + Default + Send + Sync;
    /// A matrix `[k, m]` (ggml order: m rows of k values) of any computable type.
    type Weight<'a>: Send + Sync;
    /// A convolution kernel `[out, in/groups, kh, kw]` of any computable type.
    type ConvWeight<'a>: Send + Sync;
    /// A rotary table (cos/sin per token and frequency).
    type Rope: Send + Sync;
    /// An expert group prepared on the host for [`Backend::commit_group`].
    type StagedGroup: Send;

    /// One line naming the backend and its device.
    fn description(&self) -> String;

    /// Device memory in use and at peak, on backends that own device memory (`None` on the CPU,
    /// whose memory is the process's).
    fn device_memory(&self) -> Option<DeviceMemory> {
        None
    }

    /// Starts a new peak for [`Backend::device_memory`].
    fn reset_peak_memory(&self) {}

    /// Frees the backend's own working memory (it grows again with the next ops), between phases
    /// whose shapes differ.
    fn release_scratch(&self) {}

    /// Device bytes the backend keeps for itself while it is open: its parameter arena, and the
    /// read-back staging for reads of up to `largest_read` bytes (0 where memory is the host's).
    fn overhead_bytes(&self, _largest_read: u64) -> u64 {
        0
    }

    /// Worker threads that each hold a [`ScratchSizes::per_thread`] share of working memory.
    fn scratch_threads(&self) -> usize {
        1
    }

    /// Working memory [`Backend::conv2d`] grows to for `conv` on an `hw` input (`None` on
    /// overflow).
    fn conv2d_scratch(
        &self,
        _conv: &Conv2d,
        _weight_type: TensorType,
        _hw: [usize; 2],
    ) -> Option<ScratchSizes> {
        Some(ScratchSizes::default())
    }

    /// Host bytes a [`Backend::conv_weight`] of `conv` stored as `weight_type` holds beyond the
    /// file's mapping (a CPU's packed or converted copy; a device's weights live in its memory).
    /// `None` on overflow.
    fn conv_weight_host_bytes(&self, _conv: &Conv2d, _weight_type: TensorType) -> Option<u64> {
        Some(0)
    }

    /// Sizes the working memory of [`Backend::attention`] for calls up to `shape` now, so that a
    /// decode loop whose key range grows by one each step allocates nothing.
    fn reserve_attention(&self, _shape: AttentionShape) -> Result<(), BackendError> {
        Ok(())
    }

    /// Working memory [`Backend::relu_linear_attention`] grows to.
    fn linear_attention_scratch(
        &self,
        _n_heads: usize,
        _head_dim: usize,
        _n_pixels: usize,
    ) -> Option<usize> {
        Some(0)
    }

    // Memory.

    /// `len` zeros.
    fn alloc(&self, len: usize) -> Result<Self::Buffer, BackendError>;
    /// A buffer holding `values`.
    fn upload(&self, values: &[f32]) -> Result<Self::Buffer, BackendError>;
    /// [`Backend::upload`] of a vector the caller gives up (the CPU keeps it without a copy).
    fn upload_owned(&self, values: Vec<f32>) -> Result<Self::Buffer, BackendError> {
        self.upload(&values)
    }
    /// Overwrites `dst` with `values` (same length).
    fn write(&self, dst: SliceMut<'_, Self::Buffer>, values: &[f32]) -> Result<(), BackendError>;
    /// Copies `src` to the host, after the work that writes it.
    fn read(&self, src: Slice<'_, Self::Buffer>, out: &mut [f32]) -> Result<(), BackendError>;
    /// `dst = src` (same length, distinct buffers).
    fn copy(
        &self,
        src: Slice<'_, Self::Buffer>,
        dst: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// Waits until every operation issued so far has run.
    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// `src` read into a new host vector.
    fn read_vec(&self, src: Slice<'_, Self::Buffer>) -> Result<Vec<f32>, BackendError> {
        let mut out = vec![0.0; src.len];
        self.read(src, &mut out)?;
        Ok(out)
    }

    // Weights.

    /// Prepares `tensor` (2-D `[k, m]`, ggml order) as a matmul weight.
    fn weight<'a>(
        &self,
        tensor: TensorView<'a>,
        placement: Placement,
    ) -> Result<Self::Weight<'a>, BackendError>;
    /// Prepares `tensor` as the kernel of `conv` (its element count must be `conv.weight_len()`).
    fn conv_weight<'a>(
        &self,
        tensor: TensorView<'a>,
        conv: &Conv2d,
    ) -> Result<Self::ConvWeight<'a>, BackendError>;
    fn rope_table(&self, table: &RopeTable) -> Result<Self::Rope, BackendError>;
    /// Refills `rope` with `table` (a decoder's table for its next token), reusing its storage.
    fn set_rope_table(&self, rope: &mut Self::Rope, table: &RopeTable) -> Result<(), BackendError>;

    // Expert-group residency.

    /// Device bytes one slot must hold for `weights` (0 where weights are not copied).
    fn group_bytes(&self, _weights: &[&Self::Weight<'_>]) -> u64 {
        0
    }
    /// Allocates `slots` group slots of `bytes` each (replacing any), before sampling. A
    /// backend's slots serve one sampling run at a time.
    fn reserve_group_slots(&self, _slots: usize, _bytes: u64) -> Result<(), BackendError> {
        Ok(())
    }
    /// Frees the group slots (after sampling, before the decoder needs the memory).
    fn release_group_slots(&self) {}
    /// The host side of an upload: reads and repacks `weights` (group `group`'s). Touches no device
    /// state, so it may run on another thread while the device computes.
    fn stage_group(
        &self,
        group: usize,
        weights: &[&Self::Weight<'_>],
    ) -> Result<Self::StagedGroup, BackendError>;
    /// Copies a staged group into a slot that does not hold the most recently committed group;
    /// from then on the group's weights can be used.
    fn commit_group(&self, group: usize, staged: Self::StagedGroup) -> Result<(), BackendError>;
    /// Group `group` is no longer needed: its slot may be reused.
    fn release_group(&self, _group: usize) {}
    /// Whether `group`'s weights can be used now.
    fn group_resident(&self, _group: usize) -> bool {
        true
    }

    // Ops. `x` are `[rows, dim]` row-major unless said otherwise; outputs are distinct buffers.

    /// `y[n × m] = x[n × k] · Wᵀ (+ bias[m])`, activations converted to the weight type's dot
    /// partner first (Q8_0, Q8_1, Q8_K, F16, BF16 or F32).
    fn matmul(
        &self,
        weight: &Self::Weight<'_>,
        x: Slice<'_, Self::Buffer>,
        n: usize,
        y: SliceMut<'_, Self::Buffer>,
        bias: Option<Slice<'_, Self::Buffer>>,
    ) -> Result<(), BackendError>;
    /// RMSNorm of each row of `weight.len` values: `x / sqrt(mean(x²) + eps) · w`.
    fn rms_norm(
        &self,
        x: SliceMut<'_, Self::Buffer>,
        weight: Slice<'_, Self::Buffer>,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// LayerNorm of each row of `dim` values, optional affine.
    fn layer_norm(
        &self,
        x: SliceMut<'_, Self::Buffer>,
        dim: usize,
        weight: Option<Slice<'_, Self::Buffer>>,
        bias: Option<Slice<'_, Self::Buffer>>,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// RMSNorm across the channels of each pixel of a `[C, H, W]` image (`C = weight.len`), then
    /// `· w[c] (+ b[c])`.
    fn rms_norm_channels(
        &self,
        x: SliceMut<'_, Self::Buffer>,
        weight: Slice<'_, Self::Buffer>,
        bias: Option<Slice<'_, Self::Buffer>>,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// Eval-mode batch norm of a `[C, H, W]` image: `((x − mean[c])·inv_std[c])·w[c] + b[c]`.
    fn batch_norm(
        &self,
        x: SliceMut<'_, Self::Buffer>,
        mean: Slice<'_, Self::Buffer>,
        inv_std: Slice<'_, Self::Buffer>,
        weight: Slice<'_, Self::Buffer>,
        bias: Slice<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    fn unary(&self, x: SliceMut<'_, Self::Buffer>, f: Unary) -> Result<(), BackendError>;
    /// `gate = silu(gate) · up`.
    fn swiglu(
        &self,
        gate: SliceMut<'_, Self::Buffer>,
        up: Slice<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// `acc += x`.
    fn add(
        &self,
        acc: SliceMut<'_, Self::Buffer>,
        x: Slice<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// `h[i, :] += gate ⊙ delta[i, :]` over rows of `gate.len` values (adaLN gates).
    fn add_gated_rows(
        &self,
        h: SliceMut<'_, Self::Buffer>,
        delta: Slice<'_, Self::Buffer>,
        gate: Slice<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// `x[i, :] = x[i, :] ⊙ scale + shift` over rows of `scale.len` values (adaLN modulation).
    fn modulate_rows(
        &self,
        x: SliceMut<'_, Self::Buffer>,
        scale: Slice<'_, Self::Buffer>,
        shift: Slice<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// NEOX rotary over `[n_tokens, n_heads, 2·half]` with the table's rows, in place.
    fn rope(
        &self,
        x: SliceMut<'_, Self::Buffer>,
        n_heads: usize,
        table: &Self::Rope,
    ) -> Result<(), BackendError>;
    /// `out = softmax(QKᵀ/√d (+ block)) V` with GQA, a mask and the TCRA score block: q
    /// `[n_q, H, d]`, k and v `[n_kv, H_kv, d]`, out `[n_q, H, d]`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: Slice<'_, Self::Buffer>,
        k: Slice<'_, Self::Buffer>,
        v: Slice<'_, Self::Buffer>,
        shape: AttentionShape,
        mask: Mask,
        block: Option<ScoreBlock<'_, Self::Buffer>>,
        out: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// `out = conv(input)` on one `[C_in, h, w]` image into `[C_out, oh, ow]`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &self,
        conv: &Conv2d,
        weight: &Self::ConvWeight<'_>,
        bias: Option<Slice<'_, Self::Buffer>>,
        input: Slice<'_, Self::Buffer>,
        hw: [usize; 2],
        out: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// DC-AE's ReLU linear attention: qkv `[H, 3, d, n]` → `[H, d, n]`.
    fn relu_linear_attention(
        &self,
        qkv: Slice<'_, Self::Buffer>,
        n_heads: usize,
        head_dim: usize,
        n_pixels: usize,
        eps: f32,
        out: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// Nearest ×`factor` of a `[C, h, w]` image.
    fn upsample_nearest(
        &self,
        input: Slice<'_, Self::Buffer>,
        channels: usize,
        hw: [usize; 2],
        factor: usize,
        out: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// `[C·r², h, w]` → `[C, r·h, r·w]` (PyTorch's `pixel_shuffle`).
    fn pixel_shuffle(
        &self,
        input: Slice<'_, Self::Buffer>,
        in_channels: usize,
        hw: [usize; 2],
        factor: usize,
        out: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
    /// Each channel of a `[C, h, w]` image repeated `repeats` times in place (`repeat_interleave`).
    fn repeat_channels(
        &self,
        input: Slice<'_, Self::Buffer>,
        channels: usize,
        hw: [usize; 2],
        repeats: usize,
        out: SliceMut<'_, Self::Buffer>,
    ) -> Result<(), BackendError>;
}

/// Grows `buffer` to at least `len` elements (a fresh zeroed buffer; contents are not kept), for
/// scratch that reaches its high-water mark on the first call and is reused after.
pub fn ensure_len<B: Backend + ?Sized>(
    backend: &B,
    buffer: &mut B::Buffer,
    len: usize,
) -> Result<(), BackendError> {
    if buffer.len() < len {
        *buffer = backend.alloc(len)?;
    }
    Ok(())
}
