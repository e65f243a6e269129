//! [`Backend`] for [`WgpuBackend`]: each op checks its shapes as the CPU's does, then records its
//! kernels (see `kernels.rs` for which WGSL file each uses). The element-wise ops, norms, RoPE and
//! resampling are here; the products on weights are `products.rs`'s, attention `attention.rs`'s and
//! the group uploads `residency.rs`'s. Also the dispatch helpers they share.

use std::sync::Arc;

use super::buffer::RawBuffer;
use super::kernels::{Kernel, UnaryKernel};
use super::weights::WgpuWeight;
use super::{lock, Bind, WgpuBackend, WgpuBuffer};
use crate::backend::cpu::ops::RopeTable;
use crate::backend::op_error::{check_len, checked_product, param};
use crate::backend::params::Resample;
use crate::backend::{
    AttentionShape, Backend, BackendError, Conv2d, DeviceBuffer, DeviceMemory, Mask, Placement,
    ScoreBlock, Slice, SliceMut, Unary,
};
use crate::tensor::TensorView;

/// The backend's own working memory, grown as calls need it.
#[derive(Default)]
pub struct Scratch {
    /// Activations rounded for a matmul's dot partner.
    pub(super) quantized: WgpuBuffer,
    /// Attention scores of one chunk of query rows.
    pub(super) scores: WgpuBuffer,
    /// Linear attention's per-head V·Kᵀ products.
    pub(super) kv: WgpuBuffer,
}

/// Activation rows below which a product uses the matrix-vector kernel.
pub(super) const MATVEC_MAX_ROWS: usize = 4;
/// Workgroups per grid dimension before a 1-D dispatch folds into 2-D.
const FOLD: u32 = 65535;

/// A rotary table on the device: cos then sin, each `[tokens, half]`.
pub struct WgpuRope {
    buffer: WgpuBuffer,
    tokens: usize,
    half: usize,
}

pub(super) fn u32_of(op: &'static str, v: usize) -> Result<u32, BackendError> {
    u32::try_from(v)
        .map_err(|_| param(op, format!("{v} does not fit the device's 32-bit indices")).into())
}

/// A grid of `n` workgroups, folded into two dimensions past 65535.
pub(super) fn fold(n: usize) -> [u32; 3] {
    let n = n as u64;
    if n <= FOLD as u64 {
        [n as u32, 1, 1]
    } else {
        [FOLD, n.div_ceil(FOLD as u64) as u32, 1]
    }
}

pub(super) fn raw_of<'b>(
    op: &'static str,
    buffer: &'b WgpuBuffer,
) -> Result<&'b Arc<RawBuffer>, BackendError> {
    buffer
        .raw
        .as_ref()
        .ok_or_else(|| param(op, "an empty buffer was given where values are needed").into())
}

impl WgpuBackend {
    pub(super) fn bind<'b>(
        &'b self,
        op: &'static str,
        s: &Slice<'b, WgpuBuffer>,
    ) -> Result<Bind<'b>, BackendError> {
        Ok(Bind::whole(raw_of(op, s.buffer)?))
    }

    pub(super) fn bind_mut<'b>(
        &self,
        op: &'static str,
        s: &'b SliceMut<'_, WgpuBuffer>,
    ) -> Result<Bind<'b>, BackendError> {
        Ok(Bind::whole(raw_of(op, s.buffer)?))
    }

    pub(super) fn dummy(&self) -> Bind<'_> {
        Bind::whole(&self.dummy)
    }

    /// A 1-D element-wise dispatch of `n` invocations.
    pub(super) fn elementwise(
        &self,
        kernel: Kernel,
        params: &[u32],
        bindings: &[Bind<'_>],
        n: usize,
    ) -> Result<(), BackendError> {
        self.dispatch(kernel, params, bindings, fold(n.div_ceil(256)))
    }

    /// Grows a scratch buffer to `len` values.
    pub(super) fn grow(
        &self,
        buffer: &mut WgpuBuffer,
        len: usize,
        what: &str,
    ) -> Result<(), BackendError> {
        if buffer.len < len {
            *buffer = WgpuBuffer::default();
            *buffer = self.storage(len, what)?;
        }
        Ok(())
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;
    type Weight<'a> = WgpuWeight<'a>;
    type ConvWeight<'a> = WgpuWeight<'a>;
    type Rope = WgpuRope;
    type StagedGroup = super::residency::StagedGroup;

    fn description(&self) -> String {
        let a = &self.adapter;
        format!("wgpu: {} ({}, {})", a.name, a.api, a.kind.name())
    }

    fn device_memory(&self) -> Option<DeviceMemory> {
        Some(self.memory())
    }

    fn reset_peak_memory(&self) {
        self.ledger.reset_peak();
    }

    fn release_scratch(&self) {
        *lock(&self.scratch) = Scratch::default();
    }

    fn overhead_bytes(&self, largest_read: u64) -> u64 {
        // The read-back buffer only grows: as large as earlier reads made it, or as this one needs.
        let readback = lock(&self.readback).as_ref().map_or(0, |r| r.bytes);
        self.params.bytes
            + self.dummy.bytes
            + self.dummy_out.bytes
            + readback.max(super::readback_bytes(largest_read))
    }

    fn linear_attention_scratch(
        &self,
        n_heads: usize,
        head_dim: usize,
        _n_pixels: usize,
    ) -> Option<usize> {
        n_heads.checked_mul(head_dim + 1)?.checked_mul(head_dim)
    }

    fn alloc(&self, len: usize) -> Result<WgpuBuffer, BackendError> {
        self.storage(len, "a buffer")
    }

    fn upload(&self, values: &[f32]) -> Result<WgpuBuffer, BackendError> {
        let mut buffer = self.storage(values.len(), "a buffer")?;
        self.write(buffer.all_mut(), values)?;
        Ok(buffer)
    }

    fn write(&self, dst: SliceMut<'_, WgpuBuffer>, values: &[f32]) -> Result<(), BackendError> {
        check_len("write", "values", dst.len, values.len())?;
        if values.is_empty() {
            return Ok(());
        }
        let raw = raw_of("write", dst.buffer)?;
        self.upload_bytes(
            &raw.buffer,
            dst.offset as u64 * 4,
            bytemuck::cast_slice(values),
        )
    }

    fn read(&self, src: Slice<'_, WgpuBuffer>, out: &mut [f32]) -> Result<(), BackendError> {
        check_len("read", "out", src.len, out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        let raw = raw_of("read", src.buffer)?;
        self.download(raw, src.offset as u64 * 4, bytemuck::cast_slice_mut(out))
    }

    fn copy(
        &self,
        src: Slice<'_, WgpuBuffer>,
        dst: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        check_len("copy", "dst", src.len, dst.len)?;
        if src.len == 0 {
            return Ok(());
        }
        let (s, d) = (raw_of("copy", src.buffer)?, raw_of("copy", dst.buffer)?);
        self.record_copy(
            Bind {
                raw: s,
                offset: src.offset as u64 * 4,
                size: src.len as u64 * 4,
            },
            Bind {
                raw: d,
                offset: dst.offset as u64 * 4,
                size: dst.len as u64 * 4,
            },
        )
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.finish()
    }

    fn weight<'a>(
        &self,
        tensor: TensorView<'a>,
        placement: Placement,
    ) -> Result<WgpuWeight<'a>, BackendError> {
        self.new_weight(tensor, placement)
    }

    fn conv_weight<'a>(
        &self,
        tensor: TensorView<'a>,
        conv: &Conv2d,
    ) -> Result<WgpuWeight<'a>, BackendError> {
        self.new_conv_weight(tensor, conv)
    }

    fn rope_table(&self, table: &RopeTable) -> Result<WgpuRope, BackendError> {
        let mut rope = WgpuRope {
            buffer: WgpuBuffer::default(),
            tokens: 0,
            half: 0,
        };
        self.set_rope_table(&mut rope, table)?;
        Ok(rope)
    }

    fn set_rope_table(&self, rope: &mut WgpuRope, table: &RopeTable) -> Result<(), BackendError> {
        let (cos, sin) = (table.cos(), table.sin());
        let len = cos.len() + sin.len();
        if rope.buffer.len < len {
            rope.buffer = self.storage(len, "a rotary table")?;
        }
        if len > 0 {
            let mut values = Vec::with_capacity(len);
            values.extend_from_slice(cos);
            values.extend_from_slice(sin);
            self.write(rope.buffer.slice_mut(..len), &values)?;
        }
        rope.tokens = table.n_tokens();
        rope.half = table.half();
        Ok(())
    }

    fn group_bytes(&self, weights: &[&WgpuWeight<'_>]) -> u64 {
        weights.iter().fold(0, |at, w| w.slot_end(at))
    }

    fn reserve_group_slots(&self, slots: usize, bytes: u64) -> Result<(), BackendError> {
        self.reserve_slots(slots, bytes)
    }

    fn release_group_slots(&self) {
        // Submit first: recorded work may still use a slot.
        let _ = self.flush(&mut lock(&self.recorder));
        lock(&self.slots).slots.clear();
    }

    fn stage_group(
        &self,
        group: usize,
        weights: &[&WgpuWeight<'_>],
    ) -> Result<super::residency::StagedGroup, BackendError> {
        self.stage(group, weights)
    }

    fn commit_group(
        &self,
        group: usize,
        staged: super::residency::StagedGroup,
    ) -> Result<(), BackendError> {
        self.commit(group, staged)
    }

    fn release_group(&self, group: usize) {
        lock(&self.slots).release(group);
    }

    fn group_resident(&self, group: usize) -> bool {
        lock(&self.slots).find(group).is_some()
    }

    fn matmul(
        &self,
        weight: &WgpuWeight<'_>,
        x: Slice<'_, WgpuBuffer>,
        n: usize,
        y: SliceMut<'_, WgpuBuffer>,
        bias: Option<Slice<'_, WgpuBuffer>>,
    ) -> Result<(), BackendError> {
        self.matmul_into(weight, x, n, y, bias)
    }

    fn rms_norm(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        weight: Slice<'_, WgpuBuffer>,
        eps: f32,
    ) -> Result<(), BackendError> {
        const OP: &str = "rms_norm";
        let dim = weight.len;
        if dim == 0 || !x.len.is_multiple_of(dim) {
            return Err(param(
                OP,
                format!("{} elements are not whole rows of {dim}", x.len),
            )
            .into());
        }
        let rows = x.len / dim;
        if rows == 0 {
            return Ok(());
        }
        let params = [
            u32_of(OP, rows)?,
            u32_of(OP, dim)?,
            u32_of(OP, x.offset)?,
            u32_of(OP, weight.offset)?,
            0,
            1,
            eps.to_bits(),
            0,
            0,
        ];
        let bindings = [
            self.bind_mut(OP, &x)?,
            self.bind(OP, &weight)?,
            self.dummy(),
        ];
        self.dispatch(Kernel::RmsNorm, &params, &bindings, fold(rows))
    }

    fn layer_norm(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        dim: usize,
        weight: Option<Slice<'_, WgpuBuffer>>,
        bias: Option<Slice<'_, WgpuBuffer>>,
        eps: f32,
    ) -> Result<(), BackendError> {
        const OP: &str = "layer_norm";
        if dim == 0 || !x.len.is_multiple_of(dim) {
            return Err(param(
                OP,
                format!("{} elements are not whole rows of {dim}", x.len),
            )
            .into());
        }
        if let Some(w) = &weight {
            check_len(OP, "weight", dim, w.len)?;
        }
        if let Some(b) = &bias {
            check_len(OP, "bias", dim, b.len)?;
        }
        let rows = x.len / dim;
        if rows == 0 {
            return Ok(());
        }
        let flags = weight.is_some() as u32 | (bias.is_some() as u32) << 1;
        let params = [
            u32_of(OP, rows)?,
            u32_of(OP, dim)?,
            u32_of(OP, x.offset)?,
            u32_of(OP, weight.as_ref().map_or(0, |w| w.offset))?,
            u32_of(OP, bias.as_ref().map_or(0, |b| b.offset))?,
            flags,
            eps.to_bits(),
            0,
            0,
        ];
        let w = match &weight {
            Some(w) => self.bind(OP, w)?,
            None => self.dummy(),
        };
        let b = match &bias {
            Some(b) => self.bind(OP, b)?,
            None => self.dummy(),
        };
        self.dispatch(
            Kernel::LayerNorm,
            &params,
            &[self.bind_mut(OP, &x)?, w, b],
            fold(rows),
        )
    }

    fn rms_norm_channels(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        weight: Slice<'_, WgpuBuffer>,
        bias: Option<Slice<'_, WgpuBuffer>>,
        eps: f32,
    ) -> Result<(), BackendError> {
        const OP: &str = "rms_norm_channels";
        let channels = weight.len;
        if channels == 0 || !x.len.is_multiple_of(channels) {
            return Err(param(
                OP,
                format!("{} elements are not {channels} channel planes", x.len),
            )
            .into());
        }
        if let Some(b) = &bias {
            check_len(OP, "bias", channels, b.len)?;
        }
        let pixels = x.len / channels;
        if pixels == 0 {
            return Ok(());
        }
        let params = [
            u32_of(OP, channels)?,
            u32_of(OP, pixels)?,
            u32_of(OP, x.offset)?,
            u32_of(OP, weight.offset)?,
            u32_of(OP, bias.as_ref().map_or(0, |b| b.offset))?,
            1 | (bias.is_some() as u32) << 1,
            eps.to_bits(),
            0,
            0,
        ];
        let b = match &bias {
            Some(b) => self.bind(OP, b)?,
            None => self.dummy(),
        };
        let bindings = [self.bind_mut(OP, &x)?, self.bind(OP, &weight)?, b];
        self.elementwise(Kernel::RmsNormChannels, &params, &bindings, pixels)
    }

    fn batch_norm(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        mean: Slice<'_, WgpuBuffer>,
        inv_std: Slice<'_, WgpuBuffer>,
        weight: Slice<'_, WgpuBuffer>,
        bias: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        const OP: &str = "batch_norm";
        let channels = weight.len;
        for (what, v) in [("mean", &mean), ("inv_std", &inv_std), ("bias", &bias)] {
            check_len(OP, what, channels, v.len)?;
        }
        if channels == 0 || !x.len.is_multiple_of(channels) {
            return Err(param(
                OP,
                format!("{} values are not {channels} channel planes", x.len),
            )
            .into());
        }
        if x.len == 0 {
            return Ok(());
        }
        let params = [
            u32_of(OP, channels)?,
            u32_of(OP, x.len / channels)?,
            u32_of(OP, x.offset)?,
            u32_of(OP, weight.offset)?,
            u32_of(OP, bias.offset)?,
            3,
            0,
            u32_of(OP, mean.offset)?,
            u32_of(OP, inv_std.offset)?,
        ];
        let bindings = [
            self.bind_mut(OP, &x)?,
            self.bind(OP, &weight)?,
            self.bind(OP, &bias)?,
            self.bind(OP, &mean)?,
            self.bind(OP, &inv_std)?,
        ];
        self.elementwise(Kernel::BatchNorm, &params, &bindings, x.len)
    }

    fn unary(&self, x: SliceMut<'_, WgpuBuffer>, f: Unary) -> Result<(), BackendError> {
        const OP: &str = "unary";
        if x.len == 0 {
            return Ok(());
        }
        let c = match f {
            Unary::Add(c) => c,
            _ => 0.0,
        };
        let params = [
            u32_of(OP, x.len)?,
            u32_of(OP, x.offset)?,
            0,
            0,
            1,
            c.to_bits(),
        ];
        self.elementwise(
            Kernel::Unary(UnaryKernel::of(f)),
            &params,
            &[self.bind_mut(OP, &x)?],
            x.len,
        )
    }

    fn swiglu(
        &self,
        gate: SliceMut<'_, WgpuBuffer>,
        up: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.binary(Kernel::Swiglu, "swiglu", gate, up)
    }

    fn add(
        &self,
        acc: SliceMut<'_, WgpuBuffer>,
        x: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.binary(Kernel::Add, "add", acc, x)
    }

    fn add_gated_rows(
        &self,
        h: SliceMut<'_, WgpuBuffer>,
        delta: Slice<'_, WgpuBuffer>,
        gate: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        check_len("add_gated_rows", "delta", h.len, delta.len)?;
        self.rows(Kernel::AddGatedRows, "add_gated_rows", h, delta, gate)
    }

    fn modulate_rows(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        scale: Slice<'_, WgpuBuffer>,
        shift: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        check_len("modulate_rows", "shift", scale.len, shift.len)?;
        self.rows(Kernel::ModulateRows, "modulate_rows", x, scale, shift)
    }

    fn rope(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        n_heads: usize,
        table: &WgpuRope,
    ) -> Result<(), BackendError> {
        const OP: &str = "rope_neox";
        let half = table.half;
        if half == 0 || n_heads == 0 {
            return Err(param(OP, "empty heads").into());
        }
        let expected = checked_product(OP, &[table.tokens, n_heads, 2 * half])?;
        check_len(OP, "x", expected, x.len)?;
        if x.len == 0 {
            return Ok(());
        }
        let params = [
            u32_of(OP, table.tokens)?,
            u32_of(OP, n_heads)?,
            u32_of(OP, half)?,
            u32_of(OP, x.offset)?,
            u32_of(OP, table.tokens * half)?,
        ];
        let bindings = [
            self.bind_mut(OP, &x)?,
            Bind::whole(raw_of(OP, &table.buffer)?),
        ];
        self.elementwise(Kernel::Rope, &params, &bindings, x.len / 2)
    }

    fn attention(
        &self,
        q: Slice<'_, WgpuBuffer>,
        k: Slice<'_, WgpuBuffer>,
        v: Slice<'_, WgpuBuffer>,
        shape: AttentionShape,
        mask: Mask,
        block: Option<ScoreBlock<'_, WgpuBuffer>>,
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.attention_into(q, k, v, shape, mask, block, out)
    }

    fn conv2d(
        &self,
        conv: &Conv2d,
        weight: &WgpuWeight<'_>,
        bias: Option<Slice<'_, WgpuBuffer>>,
        input: Slice<'_, WgpuBuffer>,
        hw: [usize; 2],
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.conv2d_into(conv, weight, bias, input, hw, out)
    }

    fn relu_linear_attention(
        &self,
        qkv: Slice<'_, WgpuBuffer>,
        n_heads: usize,
        head_dim: usize,
        n_pixels: usize,
        eps: f32,
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.linear_attention_into(qkv, n_heads, head_dim, n_pixels, eps, out)
    }

    fn upsample_nearest(
        &self,
        input: Slice<'_, WgpuBuffer>,
        channels: usize,
        hw: [usize; 2],
        factor: usize,
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.resample(Resample::UpsampleNearest, input, channels, hw, factor, out)
    }

    fn pixel_shuffle(
        &self,
        input: Slice<'_, WgpuBuffer>,
        in_channels: usize,
        hw: [usize; 2],
        factor: usize,
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.resample(Resample::PixelShuffle, input, in_channels, hw, factor, out)
    }

    fn repeat_channels(
        &self,
        input: Slice<'_, WgpuBuffer>,
        channels: usize,
        hw: [usize; 2],
        repeats: usize,
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        self.resample(Resample::RepeatChannels, input, channels, hw, repeats, out)
    }
}

impl WgpuBackend {
    fn binary(
        &self,
        kernel: Kernel,
        op: &'static str,
        x: SliceMut<'_, WgpuBuffer>,
        y: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        check_len(op, "operand", x.len, y.len)?;
        if x.len == 0 {
            return Ok(());
        }
        let params = [
            u32_of(op, x.len)?,
            u32_of(op, x.offset)?,
            u32_of(op, y.offset)?,
            0,
            1,
            0,
        ];
        self.elementwise(
            kernel,
            &params,
            &[self.bind_mut(op, &x)?, self.bind(op, &y)?],
            x.len,
        )
    }

    fn rows(
        &self,
        kernel: Kernel,
        op: &'static str,
        x: SliceMut<'_, WgpuBuffer>,
        y: Slice<'_, WgpuBuffer>,
        z: Slice<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        // add_gated_rows: y is [rows, row], z [row]; modulate_rows: y and z are [row].
        let row = if kernel == Kernel::AddGatedRows {
            z.len
        } else {
            y.len
        };
        if row == 0 || !x.len.is_multiple_of(row) {
            return Err(param(op, format!("{} values are not whole rows of {row}", x.len)).into());
        }
        if x.len == 0 {
            return Ok(());
        }
        let params = [
            u32_of(op, x.len)?,
            u32_of(op, x.offset)?,
            u32_of(op, y.offset)?,
            u32_of(op, z.offset)?,
            u32_of(op, row)?,
            0,
        ];
        let bindings = [
            self.bind_mut(op, &x)?,
            self.bind(op, &y)?,
            self.bind(op, &z)?,
        ];
        self.elementwise(kernel, &params, &bindings, x.len)
    }

    fn resample(
        &self,
        which: Resample,
        input: Slice<'_, WgpuBuffer>,
        channels: usize,
        hw: [usize; 2],
        r: usize,
        out: SliceMut<'_, WgpuBuffer>,
    ) -> Result<(), BackendError> {
        which.check(channels, hw, r, input.len, out.len)?;
        let (op, kernel) = match which {
            Resample::UpsampleNearest => ("upsample_nearest", Kernel::UpsampleNearest),
            Resample::PixelShuffle => ("pixel_shuffle", Kernel::PixelShuffle),
            Resample::RepeatChannels => ("repeat_channels", Kernel::RepeatChannels),
        };
        if out.len == 0 {
            return Ok(());
        }
        let params = [
            u32_of(op, channels)?,
            u32_of(op, hw[0])?,
            u32_of(op, hw[1])?,
            u32_of(op, r)?,
            u32_of(op, input.offset)?,
            u32_of(op, out.offset)?,
            u32_of(op, out.len)?,
        ];
        let bindings = [self.bind(op, &input)?, self.bind_mut(op, &out)?];
        self.elementwise(kernel, &params, &bindings, out.len)
    }
}
