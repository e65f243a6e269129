//! The products on weights: preparing a matrix or a convolution kernel (repacked, uploaded when
//! shared, placed in its group's slot otherwise), and the matmul and conv2d that dispatch the tiled
//! GEMM or the matrix-vector kernel over each of its parts.

use super::kernels::{Kernel, Partner, WeightFormat};
use super::ops::{fold, raw_of, u32_of, MATVEC_MAX_ROWS};
use super::slots::Slot;
use super::weights::{self, Home, WgpuWeight};
use super::{lock, Bind, WgpuBackend, WgpuBuffer};
use crate::backend::op_error::{check_len, checked_product, param};
use crate::backend::{Backend, BackendError, Conv2d, Placement, Slice, SliceMut};
use crate::tensor::TensorView;

impl WgpuBackend {
    /// The slot binding of one part of a group weight.
    pub(super) fn group_part<'s>(slot: &'s Slot, part: &weights::Part) -> Bind<'s> {
        Bind {
            raw: &slot.raw,
            offset: part.slot_offset.load(std::sync::atomic::Ordering::Relaxed),
            size: part.bytes,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn product(
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

    pub(super) fn new_weight<'a>(
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

    pub(super) fn new_conv_weight<'a>(
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

    pub(super) fn matmul_into(
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

    pub(super) fn conv2d_into(
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
}
