//! [`Backend`] for [`WgpuBackend`]: each op checks its shapes as the CPU's does, then records its
//! kernels (see `kernels.rs` for which WGSL file each uses).

use std::sync::Arc;

use super::buffer::RawBuffer;
use super::kernels::{Kernel, Partner, UnaryKernel, WeightFormat};
use super::slots::Slot;
use super::weights::{self, Home, WgpuWeight};
use super::{lock, Bind, WgpuBackend, WgpuBuffer};
use crate::backend::cpu::ops::RopeTable;
use crate::backend::op_error::{check_len, checked_product, param};
use crate::backend::params::Resample;
use crate::backend::{
    AttentionShape, Backend, BackendError, BiasMode, Conv2d, DeviceBuffer, DeviceMemory, Mask,
    Placement, ScoreBlock, Slice, SliceMut, Unary,
};
use crate::tensor::TensorView;

/// The backend's own working memory, grown as calls need it.
#[derive(Default)]
pub struct Scratch {
    /// Activations rounded for a matmul's dot partner.
    quantized: WgpuBuffer,
    /// Attention scores of one chunk of query rows.
    scores: WgpuBuffer,
    /// Linear attention's per-head V·Kᵀ products.
    kv: WgpuBuffer,
}

/// Score values one attention chunk may hold (64 MiB).
const SCORE_BUDGET: usize = 16 << 20;
/// Query rows one attention dispatch may cover (a workgroup-grid dimension).
const MAX_ROWS: usize = 65535;
/// The largest head dimension the score kernel holds in workgroup memory.
const MAX_HEAD_DIM: usize = 256;
/// Activation rows below which a product uses the matrix-vector kernel.
const MATVEC_MAX_ROWS: usize = 4;
/// Workgroups per grid dimension before a 1-D dispatch folds into 2-D.
const FOLD: u32 = 65535;

/// A rotary table on the device: cos then sin, each `[tokens, half]`.
pub struct WgpuRope {
    buffer: WgpuBuffer,
    tokens: usize,
    half: usize,
}

/// A staged expert group: its slot image in a host-visible staging buffer, laid out as the
/// weights' parts say, ready to be copied into a slot by the device.
pub struct StagedGroup {
    group: usize,
    staging: Option<Arc<RawBuffer>>,
    bytes: u64,
}

fn u32_of(op: &'static str, v: usize) -> Result<u32, BackendError> {
    u32::try_from(v)
        .map_err(|_| param(op, format!("{v} does not fit the device's 32-bit indices")).into())
}

/// A grid of `n` workgroups, folded into two dimensions past 65535.
fn fold(n: usize) -> [u32; 3] {
    let n = n as u64;
    if n <= FOLD as u64 {
        [n as u32, 1, 1]
    } else {
        [FOLD, n.div_ceil(FOLD as u64) as u32, 1]
    }
}

fn raw_of<'b>(
    op: &'static str,
    buffer: &'b WgpuBuffer,
) -> Result<&'b Arc<RawBuffer>, BackendError> {
    buffer
        .raw
        .as_ref()
        .ok_or_else(|| param(op, "an empty buffer was given where values are needed").into())
}

impl WgpuBackend {
    fn bind<'b>(
        &'b self,
        op: &'static str,
        s: &Slice<'b, WgpuBuffer>,
    ) -> Result<Bind<'b>, BackendError> {
        Ok(Bind::whole(raw_of(op, s.buffer)?))
    }

    fn bind_mut<'b>(
        &self,
        op: &'static str,
        s: &'b SliceMut<'_, WgpuBuffer>,
    ) -> Result<Bind<'b>, BackendError> {
        Ok(Bind::whole(raw_of(op, s.buffer)?))
    }

    fn dummy(&self) -> Bind<'_> {
        Bind::whole(&self.dummy)
    }

    /// A 1-D element-wise dispatch of `n` invocations.
    fn elementwise(
        &self,
        kernel: Kernel,
        params: &[u32],
        bindings: &[Bind<'_>],
        n: usize,
    ) -> Result<(), BackendError> {
        self.dispatch(kernel, params, bindings, fold(n.div_ceil(256)))
    }

    /// Grows a scratch buffer to `len` values.
    fn grow(&self, buffer: &mut WgpuBuffer, len: usize, what: &str) -> Result<(), BackendError> {
        if buffer.len < len {
            *buffer = WgpuBuffer::default();
            *buffer = self.storage(len, what)?;
        }
        Ok(())
    }

    /// The slot binding of one part of a group weight.
    fn group_part<'s>(slot: &'s Slot, part: &weights::Part) -> Bind<'s> {
        Bind {
            raw: &slot.raw,
            offset: part.slot_offset.load(std::sync::atomic::Ordering::Relaxed),
            size: part.bytes,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        kernel: Kernel,
        weight: &WgpuWeight<'_>,
        part_index: usize,
        params: &[u32],
        x: Bind<'_>,
        y: Bind<'_>,
        bias: Bind<'_>,
        groups: [u32; 3],
    ) -> Result<(), BackendError> {
        let part = &weight.parts[part_index];
        match &weight.home {
            Home::Shared(buffers) => {
                let w = Bind::whole(&buffers[part_index]);
                self.dispatch(kernel, params, &[w, x, y, bias], groups)
            }
            Home::Group(group) => {
                let slots = lock(&self.slots);
                let slot = slots
                    .find(*group)
                    .ok_or(BackendError::GroupNotResident { group: *group })?;
                let w = Self::group_part(slot, part);
                self.dispatch(kernel, params, &[w, x, y, bias], groups)
            }
        }
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;
    type Weight<'a> = WgpuWeight<'a>;
    type ConvWeight<'a> = WgpuWeight<'a>;
    type Rope = WgpuRope;
    type StagedGroup = StagedGroup;

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
        let format =
            WeightFormat::of(tensor.ty()).ok_or_else(|| BackendError::UnsupportedType {
                backend: "wgpu",
                name: tensor.name().into(),
                ty: tensor.ty(),
                what: "matmul",
            })?;
        let dims = tensor.dims();
        if dims.is_empty() || dims.len() > 2 && dims[2..].iter().any(|&d| d != 1) {
            return Err(param(
                "matmul",
                format!("weight '{}' is not a matrix: {dims:?}", tensor.name()),
            )
            .into());
        }
        let (k, rows) = (tensor.row_len(), tensor.n_rows());
        u32_of("matmul", k)?;
        u32_of("matmul", rows)?;
        let parts = weights::plan_parts(tensor.name(), format, rows, k, self.max_binding_bytes())?;
        let home = match placement {
            Placement::Group(g) => Home::Group(g),
            Placement::Shared => {
                let mut buffers = Vec::with_capacity(parts.len());
                let row_bytes = tensor.row_bytes();
                for part in &parts {
                    let raw = self.create(
                        part.bytes,
                        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                        tensor.name(),
                        true,
                    )?;
                    let mut bytes = vec![0u8; part.bytes as usize];
                    let src =
                        &tensor.bytes()[part.row0 * row_bytes..(part.row0 + part.rows) * row_bytes];
                    weights::repack(format, src, &mut bytes);
                    self.upload_bytes(&raw.buffer, 0, &bytes)?;
                    buffers.push(raw);
                }
                Home::Shared(buffers)
            }
        };
        Ok(WgpuWeight {
            view: tensor,
            format,
            rows,
            k,
            parts,
            home,
        })
    }

    fn conv_weight<'a>(
        &self,
        tensor: TensorView<'a>,
        conv: &Conv2d,
    ) -> Result<WgpuWeight<'a>, BackendError> {
        let len = conv.weight_len()?;
        check_len("conv2d", "weight", len, tensor.n_elements() as usize)?;
        let k = len / conv.out_channels;
        // The kernel as the matrix [k, out]: rows must stay whole blocks of the type.
        let view = TensorView::new(
            tensor.name(),
            tensor.ty(),
            &[k as u64, conv.out_channels as u64],
            tensor.bytes(),
        )
        .map_err(|e| param("conv2d", format!("weight '{}': {e}", tensor.name())))?;
        let weight = self.weight(view, Placement::Shared)?;
        if weight.parts.len() != 1 {
            return Err(BackendError::TooLarge {
                what: format!("convolution weight '{}'", tensor.name()),
                bytes: weight.parts.iter().map(|p| p.bytes).sum(),
                limit: self.max_binding_bytes(),
                limit_name: "storage binding",
            });
        }
        Ok(weight)
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
        let mut s = lock(&self.slots);
        s.slots.clear();
        for _ in 0..slots {
            let raw = self.create(
                bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                "an expert-group slot",
                false,
            )?;
            s.slots.push(Slot {
                raw,
                group: None,
                stamp: 0,
            });
        }
        Ok(())
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
    ) -> Result<StagedGroup, BackendError> {
        let total = weights.iter().fold(0, |at, w| w.slot_end(at));
        if total == 0 {
            return Ok(StagedGroup {
                group,
                staging: None,
                bytes: 0,
            });
        }
        let size = total.div_ceil(4) * 4;
        if size > self.limits.max_buffer_size {
            return Err(BackendError::TooLarge {
                what: format!("expert group {group}"),
                bytes: size,
                limit: self.limits.max_buffer_size,
                limit_name: "buffer",
            });
        }
        // Host-visible memory written in place (zero-filled by wgpu, so alignment gaps are 0), then
        // copied into the slot by the device: no second host copy, and nothing to wait for.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("latte group staging"),
            size,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::OutOfMemory {
                what: format!("staging expert group {group} ({e})"),
                bytes: size,
                allocated: self.ledger.allocated(),
            });
        }
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| BackendError::Device(format!("staging expert group {group}: {e}")))?;
            let mut part_bytes = Vec::new();
            let mut at = 0;
            for w in weights {
                if !matches!(w.home, Home::Group(g) if g == group) {
                    return Err(param(
                        "stage_group",
                        format!("weight '{}' is not in group {group}", w.view.name()),
                    )
                    .into());
                }
                at = w.place_in_slot(at);
                for part in &w.parts {
                    let start =
                        part.slot_offset.load(std::sync::atomic::Ordering::Relaxed) as usize;
                    part_bytes.resize(part.bytes as usize, 0);
                    weights::repack(w.format, w.part_source(part), &mut part_bytes);
                    view.slice(start..start + part_bytes.len())
                        .copy_from_slice(&part_bytes);
                }
            }
        }
        buffer.unmap();
        Ok(StagedGroup {
            group,
            staging: Some(Arc::new(RawBuffer::new(buffer, size, &self.staging_ledger))),
            bytes: size,
        })
    }

    fn commit_group(&self, group: usize, staged: StagedGroup) -> Result<(), BackendError> {
        if staged.group != group {
            return Err(param(
                "commit_group",
                format!("group {} was staged, not {group}", staged.group),
            )
            .into());
        }
        let mut slots = lock(&self.slots);
        let index = slots.victim().ok_or_else(|| {
            BackendError::Device("no expert-group slot is reserved on the device".into())
        })?;
        let slot = &slots.slots[index];
        if staged.bytes > slot.raw.bytes {
            return Err(BackendError::TooLarge {
                what: format!("expert group {group}"),
                bytes: staged.bytes,
                limit: slot.raw.bytes,
                limit_name: "group slot",
            });
        }
        let raw = slot.raw.clone();
        slots.occupy(index, group);
        drop(slots);
        if let Some(staging) = &staged.staging {
            // In the command stream: after the work that used the slot's previous group, before
            // the work that uses this one.
            self.record_copy(
                Bind::whole(staging),
                Bind {
                    raw: &raw,
                    offset: 0,
                    size: staged.bytes,
                },
            )?;
        }
        Ok(())
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
        const OP: &str = "matmul";
        let (k, m) = (weight.k, weight.rows);
        if n.checked_mul(k) != Some(x.len) {
            return Err(param(
                OP,
                format!("x has {} values, expected n·k = {n}·{k}", x.len),
            )
            .into());
        }
        if n.checked_mul(m) != Some(y.len) {
            return Err(param(
                OP,
                format!("y has {} values, expected n·m = {n}·{m}", y.len),
            )
            .into());
        }
        if let Some(b) = &bias {
            check_len(OP, "bias", m, b.len)?;
        }
        if n == 0 || m == 0 {
            return Ok(());
        }
        if k == 0 {
            return self.write(y, &vec![0.0; n * m]);
        }
        let partner = weight.format.partner();
        let mut scratch = lock(&self.scratch);
        let (x_bind, x_off) = if partner == Partner::F32 {
            (self.bind(OP, &x)?, u32_of(OP, x.offset)?)
        } else {
            let values = checked_product(OP, &[n, k])?;
            self.grow(&mut scratch.quantized, values, "quantized activations")?;
            let q = raw_of(OP, &scratch.quantized)?;
            self.elementwise(
                Kernel::Quantize(partner),
                &[u32_of(OP, values)?, u32_of(OP, x.offset)?],
                &[self.bind(OP, &x)?, Bind::whole(q)],
                values,
            )?;
            (Bind::whole(q), 0)
        };
        let y_bind = self.bind_mut(OP, &y)?;
        let (bias_bind, bias_off) = match &bias {
            Some(b) => (self.bind(OP, b)?, b.offset),
            None => (self.dummy(), 0),
        };
        let block = weights::tensor_type(weight.format).block_size();
        for (i, part) in weight.parts.iter().enumerate() {
            let params = [
                u32_of(OP, part.rows)?,
                u32_of(OP, n)?,
                u32_of(OP, k)?,
                0,
                part.scale_words,
                u32_of(OP, k / block)?,
                x_off,
                u32_of(OP, y.offset + part.row0)?,
                u32_of(OP, m)?,
                u32_of(OP, bias_off + part.row0)?,
                bias.is_some() as u32,
                1,
            ];
            let (kernel, groups) = if n <= MATVEC_MAX_ROWS {
                let mut g = fold(part.rows);
                g[2] = n.div_ceil(4) as u32;
                let kernel = if self.subgroups() {
                    Kernel::MatvecSubgroup(weight.format)
                } else {
                    Kernel::Matvec(weight.format)
                };
                (kernel, g)
            } else {
                (
                    Kernel::MatmulTiled(weight.format),
                    [
                        u32_of(OP, n.div_ceil(64))?,
                        u32_of(OP, part.rows.div_ceil(64))?,
                        1,
                    ],
                )
            };
            self.product(
                kernel, weight, i, &params, x_bind, y_bind, bias_bind, groups,
            )?;
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: SliceMut<'_, WgpuBuffer>,
        weight: Slice<'_, WgpuBuffer>,
        eps: f32,
    ) -> Result<(), BackendError> {
        const OP: &str = "rms_norm";
        let dim = weight.len;
        if dim == 0 || x.len % dim != 0 {
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
        if dim == 0 || x.len % dim != 0 {
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
        if channels == 0 || x.len % channels != 0 {
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
        if channels == 0 || x.len % channels != 0 {
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
        const OP: &str = "attention";
        let AttentionShape {
            n_q,
            n_kv,
            n_heads,
            n_kv_heads,
            head_dim: d,
        } = shape;
        shape.check(q.len, k.len, v.len, out.len)?;
        if d > MAX_HEAD_DIM {
            return Err(param(
                OP,
                format!("head_dim {d} exceeds the GPU kernel's {MAX_HEAD_DIM}"),
            )
            .into());
        }
        if let Some(b) = &block {
            shape.check_block(
                b.col0,
                b.n_cols,
                b.add.as_ref().map(|a| a.previous.len),
                b.readout.as_ref().map(|r| r.len),
            )?;
            if let Some(add) = &b.add {
                check_len(OP, "bias gate", n_heads, add.gate.len)?;
            }
        }
        if n_q == 0 {
            return Ok(());
        }
        if n_kv == 0 {
            return self.write(out, &vec![0.0; q.len]);
        }
        let (causal, offset) = match mask {
            Mask::None => (0, 0),
            Mask::Causal { offset } => (1, offset.min(n_kv)),
        };
        let rows = (SCORE_BUDGET / (n_heads * n_kv).max(1))
            .clamp(1, MAX_ROWS)
            .min(n_q);
        let mut scratch = lock(&self.scratch);
        self.grow(
            &mut scratch.scores,
            checked_product(OP, &[n_heads, rows, n_kv])?,
            "attention scores",
        )?;
        let s = Bind::whole(raw_of(OP, &scratch.scores)?);
        let (mode, col0, n_cols) = match &block {
            None => (0, 0, 0),
            Some(b) => (
                match b.mode {
                    BiasMode::PreSoftmax => 1,
                    BiasMode::PostSoftmax => 2,
                },
                b.col0,
                b.n_cols,
            ),
        };
        let add = block.as_ref().and_then(|b| b.add.as_ref());
        let readout = block.as_ref().and_then(|b| b.readout.as_ref());
        let (prev, gate) = match add {
            Some(a) => (self.bind(OP, &a.previous)?, self.bind(OP, &a.gate)?),
            None => (self.dummy(), self.dummy()),
        };
        let readout_bind = match readout {
            Some(r) => self.bind_mut(OP, r)?,
            None => Bind::whole(&self.dummy_out),
        };
        let (q_bind, k_bind, v_bind, out_bind) = (
            self.bind(OP, &q)?,
            self.bind(OP, &k)?,
            self.bind(OP, &v)?,
            self.bind_mut(OP, &out)?,
        );
        let scale = 1.0 / (d as f32).sqrt();
        for i0 in (0..n_q).step_by(rows) {
            let chunk = rows.min(n_q - i0);
            let params = [
                u32_of(OP, n_q)?,
                u32_of(OP, n_kv)?,
                u32_of(OP, n_heads)?,
                u32_of(OP, n_kv_heads)?,
                u32_of(OP, d)?,
                u32_of(OP, q.offset)?,
                u32_of(OP, k.offset)?,
                u32_of(OP, v.offset)?,
                u32_of(OP, out.offset)?,
                u32_of(OP, i0)?,
                u32_of(OP, chunk)?,
                causal,
                u32_of(OP, offset)?,
                scale.to_bits(),
                mode,
                u32_of(OP, col0)?,
                u32_of(OP, n_cols)?,
                add.is_some() as u32,
                readout.is_some() as u32,
                u32_of(OP, add.map_or(0, |a| a.previous.offset))?,
                u32_of(OP, add.map_or(0, |a| a.gate.offset))?,
                u32_of(OP, readout.map_or(0, |r| r.offset))?,
            ];
            let heads = u32_of(OP, n_heads)?;
            let chunk32 = u32_of(OP, chunk)?;
            self.dispatch(
                Kernel::AttentionScores,
                &params,
                &[q_bind, k_bind, s],
                [u32_of(OP, n_kv.div_ceil(64))?, chunk32, heads],
            )?;
            self.dispatch(
                Kernel::AttentionSoftmax,
                &params,
                &[s, prev, gate, readout_bind],
                [chunk32, heads, 1],
            )?;
            self.dispatch(
                Kernel::AttentionValues,
                &params,
                &[s, v_bind, out_bind],
                [u32_of(OP, d.div_ceil(64))?, chunk32, heads],
            )?;
        }
        Ok(())
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
        const OP: &str = "conv2d";
        let [oh, ow] = conv.check(
            hw,
            input.len,
            weight.rows * weight.k,
            out.len,
            bias.as_ref().map(|b| b.len),
        )?;
        if out.len == 0 {
            return Ok(());
        }
        let groups = conv.groups;
        let (m, c_in) = (conv.out_channels / groups, conv.in_channels / groups);
        let pixels = oh * ow;
        let block = weights::tensor_type(weight.format).block_size();
        let (bias_bind, bias_off) = match &bias {
            Some(b) => (self.bind(OP, b)?, b.offset),
            None => (self.dummy(), 0),
        };
        let depthwise = conv.is_depthwise();
        let params = [
            u32_of(OP, if depthwise { conv.out_channels } else { m })?,
            u32_of(OP, pixels)?,
            u32_of(OP, weight.k)?,
            0,
            weight.parts[0].scale_words,
            u32_of(OP, weight.k / block)?,
            u32_of(OP, input.offset)?,
            u32_of(OP, out.offset)?,
            u32_of(OP, c_in)?,
            u32_of(OP, bias_off)?,
            bias.is_some() as u32,
            u32_of(OP, groups)?,
            u32_of(OP, hw[0])?,
            u32_of(OP, hw[1])?,
            u32_of(OP, conv.kernel[0])?,
            u32_of(OP, conv.kernel[1])?,
            u32_of(OP, conv.stride[0])?,
            u32_of(OP, conv.stride[1])?,
            u32_of(OP, conv.padding[0])?,
            u32_of(OP, conv.padding[1])?,
            u32_of(OP, ow)?,
        ];
        let (x, y) = (self.bind(OP, &input)?, self.bind_mut(OP, &out)?);
        if depthwise {
            let groups = fold(out.len.div_ceil(256));
            self.product(
                Kernel::ConvDepthwise(weight.format),
                weight,
                0,
                &params,
                x,
                y,
                bias_bind,
                groups,
            )
        } else {
            let grid = [
                u32_of(OP, pixels.div_ceil(64))?,
                u32_of(OP, m.div_ceil(64))?,
                u32_of(OP, groups)?,
            ];
            self.product(
                Kernel::ConvTiled(weight.format),
                weight,
                0,
                &params,
                x,
                y,
                bias_bind,
                grid,
            )
        }
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
        const OP: &str = "relu_linear_attention";
        let d = head_dim;
        if n_heads == 0 || d == 0 {
            return Err(param(OP, "n_heads and head_dim must be positive").into());
        }
        let plane = checked_product(OP, &[d, n_pixels])?;
        check_len(
            OP,
            "qkv",
            checked_product(OP, &[n_heads, 3, plane])?,
            qkv.len,
        )?;
        check_len(OP, "out", checked_product(OP, &[n_heads, plane])?, out.len)?;
        if n_pixels == 0 {
            return Ok(());
        }
        let mut scratch = lock(&self.scratch);
        self.grow(
            &mut scratch.kv,
            checked_product(OP, &[n_heads, d + 1, d])?,
            "linear attention",
        )?;
        let kv = Bind::whole(raw_of(OP, &scratch.kv)?);
        let params = [
            u32_of(OP, n_heads)?,
            u32_of(OP, d)?,
            u32_of(OP, n_pixels)?,
            u32_of(OP, qkv.offset)?,
            u32_of(OP, out.offset)?,
            eps.to_bits(),
        ];
        let bindings = [self.bind(OP, &qkv)?, kv, self.bind_mut(OP, &out)?];
        let (heads, d32) = (u32_of(OP, n_heads)?, u32_of(OP, d)?);
        self.dispatch(
            Kernel::LinearAttentionKv,
            &params,
            &bindings,
            [d32, d32 + 1, heads],
        )?;
        self.dispatch(
            Kernel::LinearAttentionOut,
            &params,
            &bindings,
            [u32_of(OP, n_pixels.div_ceil(256))?, d32, heads],
        )
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
        if row == 0 || x.len % row != 0 {
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
