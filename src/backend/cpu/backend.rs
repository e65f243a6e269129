//! [`CpuBackend`]: the CPU kernels (`matmul`, `ops`) behind the [`Backend`] interface: buffers are
//! `Vec<f32>`, weights are views of the mapped file (zero copy; resident Q4_0, Q8_0, Q4_K and Q6_K
//! matrices also repacked once, see `packed`, unless the backend is [`CPU_MAPPED`]), a quantized
//! dense 1×1 convolution kernel stays a view too (`pointwise`: a quantized matmul in channel-major
//! order), other convolution kernels are packed once for the GEMM of `ops::conv` (f32, or bf16
//! pairs where the CPU has BF16 dot products), and every op calls the same function the models
//! called before the interface existed, so results are bit for bit the same.
//!
//! Working memory (quantized activations, attention rows, packing panels) is per calling thread:
//! it grows to the largest call that thread has made and is then reused, so a decode loop
//! allocates nothing; [`CpuBackend::release_scratch`] gives it back. Residency is the page cache's
//! (`crate::residency` advises the kernel), so the group methods do nothing.

use std::borrow::Cow;
use std::cell::RefCell;

use rayon::prelude::*;

use super::dot::packed_kernel;
use super::isa::Isa;
use super::matmul::{
    matmul_packed, matmul_repacking, matmul_with_isa, packs_per_task, MatmulScratch,
};
use super::ops::gemm::MicroKernel;
use super::ops::{self, AttentionScratch, ConvScratch, PreparedConv, RopeTable};
use super::packed::PackedWeight;
use super::pointwise::{self, PointwiseConv};
use crate::backend::op_error::{check_len, checked_product, param};
use crate::backend::{
    AttentionShape, Backend, BackendError, Conv2d, Mask, Placement, ScoreBlock, ScratchSizes,
    Slice, SliceMut, Unary,
};
use crate::dtype::TensorType;
use crate::tensor::TensorView;

/// The CPU backend, on one instruction set (the best one this CPU has unless chosen).
#[derive(Clone, Copy, Debug)]
pub struct CpuBackend {
    isa: Option<Isa>,
    /// Whether resident (`Placement::Shared`) Q4_0, Q8_0, Q4_K and Q6_K matrices are repacked at
    /// load (`packed`).
    repack: bool,
}

/// The CPU backend on this CPU's best instruction set; it repacks resident Q4_0, Q8_0, Q4_K and
/// Q6_K matrices where the instruction set has packed kernels (x86), as llama.cpp's CPU_REPACK
/// does.
pub static CPU: CpuBackend = CpuBackend {
    isa: None,
    repack: true,
};

/// [`CPU`] computing on the file's layout only: every weight stays a view of the mapped file, so
/// its pages can be released and read again (what generation does with the text model between
/// phases).
pub static CPU_MAPPED: CpuBackend = CpuBackend {
    isa: None,
    repack: false,
};

/// A matmul weight: the file's view, and its repacked copy where the backend made one.
pub struct CpuWeight<'a> {
    pub view: TensorView<'a>,
    pub packed: Option<PackedWeight>,
}

/// A convolution kernel: a quantized dense 1×1 one as the file's view ([`PointwiseConv`]), any
/// other packed for the GEMM ([`PreparedConv`]).
pub enum CpuConvWeight<'a> {
    Pointwise(PointwiseConv<'a>),
    Gemm(PreparedConv<'a>),
}

impl CpuConvWeight<'_> {
    fn conv(&self) -> &Conv2d {
        match self {
            CpuConvWeight::Pointwise(p) => p.conv(),
            CpuConvWeight::Gemm(g) => g.conv(),
        }
    }
}

#[derive(Default)]
struct Scratch {
    matmul: MatmulScratch,
    attention: AttentionScratch,
    conv: ConvScratch,
    linear_attention: Vec<f32>,
    /// The gated TCRA block `g[h] · previous[h]`.
    block: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Element-wise loops over more values than this run as parallel chunks.
const PAR_CHUNK: usize = 1 << 15;

impl CpuBackend {
    /// The backend on a chosen instruction set (tests pin [`Isa::Scalar`] or each SIMD family).
    pub const fn with_isa(isa: Isa) -> Self {
        CpuBackend {
            isa: Some(isa),
            repack: true,
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa.unwrap_or_else(Isa::detect)
    }

    /// The convolution GEMM kernel for a weight stored as `ty` on this backend's instruction set.
    fn conv_kernel(&self, ty: TensorType) -> Result<MicroKernel, BackendError> {
        let isa = self.isa();
        Ok(MicroKernel::for_weight(isa, ty)
            .ok_or_else(|| param("conv2d", format!("this CPU cannot run {isa} kernels")))?)
    }

    /// Frees this thread's working memory (it grows again on the next op).
    pub fn release_scratch() {
        SCRATCH.with(|s| *s.borrow_mut() = Scratch::default());
    }

    /// f32 values of working memory this thread holds now (packing panels, attention rows,
    /// linear-attention products, the TCRA block; the matmul's quantized activations in 4-byte
    /// units).
    pub fn held_scratch_values() -> usize {
        SCRATCH.with(|s| {
            let s = s.borrow();
            s.matmul.capacity_bytes().div_ceil(4)
                + s.attention.held_values()
                + s.conv.held_values()
                + s.linear_attention.len()
                + s.block.len()
        })
    }
}

fn host<'s>(s: &Slice<'s, Vec<f32>>) -> &'s [f32] {
    &s.buffer[s.range()]
}

fn host_mut<'s>(s: SliceMut<'s, Vec<f32>>) -> &'s mut [f32] {
    let r = s.range();
    &mut s.buffer[r]
}

fn apply_unary(f: Unary, x: &mut [f32]) {
    match f {
        Unary::Silu => ops::silu(x),
        Unary::GeluErf => ops::gelu_erf(x),
        Unary::GeluTanh => ops::gelu_tanh(x),
        Unary::QuickGelu => ops::quick_gelu(x),
        Unary::Relu => ops::relu(x),
        Unary::Mish => ops::mish(x),
        Unary::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
        Unary::Add(c) => x.iter_mut().for_each(|v| *v += c),
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;
    type Weight<'a> = CpuWeight<'a>;
    type ConvWeight<'a> = CpuConvWeight<'a>;
    type Rope = RopeTable;
    type StagedGroup = ();

    fn description(&self) -> String {
        format!(
            "cpu ({}, {} threads)",
            self.isa(),
            rayon::current_num_threads()
        )
    }

    fn scratch_threads(&self) -> usize {
        rayon::current_num_threads()
    }

    fn release_scratch(&self) {
        CpuBackend::release_scratch();
    }

    fn conv2d_scratch(
        &self,
        conv: &Conv2d,
        weight_type: TensorType,
        hw: [usize; 2],
    ) -> Option<ScratchSizes> {
        // A pointwise convolution's quantized columns live in the matmul scratch and its packed
        // rows in each worker's pack buffer; a GEMM's im2col blocks in the convolution scratch
        // (its weights are packed at load, so it has no shared part). A model keeps each field's
        // maximum over its layers: exact for the shared part; per thread the two buffers are
        // separate, so it can undercount by the smaller, a pack buffer of 16 weight rows or
        // 64 KiB (tens of KiB per thread, beside megabytes of im2col blocks).
        if pointwise::applies(conv, weight_type, self.isa()) {
            return PointwiseConv::scratch_sizes(conv, weight_type, self.isa(), hw).ok();
        }
        let sizes = ConvScratch::prepared_sizes_for(conv, weight_type, hw).ok()?;
        Some(ScratchSizes {
            shared: sizes.packed_a,
            per_thread: sizes.block,
        })
    }

    fn conv_weight_host_bytes(&self, conv: &Conv2d, weight_type: TensorType) -> Option<u64> {
        if pointwise::applies(conv, weight_type, self.isa()) {
            return Some(0);
        }
        PreparedConv::bytes_for(conv, weight_type)
    }

    fn linear_attention_scratch(
        &self,
        n_heads: usize,
        head_dim: usize,
        n_pixels: usize,
    ) -> Option<usize> {
        ops::linear_attention::scratch_values(n_heads, head_dim, n_pixels)
    }

    fn reserve_attention(&self, shape: AttentionShape) -> Result<(), BackendError> {
        with_scratch(|s| s.attention.reserve(&shape))?;
        Ok(())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>, BackendError> {
        // A size from user input (a context length) must fail, not abort.
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| BackendError::OutOfMemory {
                what: "a host buffer".into(),
                bytes: (len as u64).saturating_mul(4),
                allocated: 0,
            })?;
        v.resize(len, 0.0);
        Ok(v)
    }

    fn upload(&self, values: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(values.to_vec())
    }

    fn upload_owned(&self, values: Vec<f32>) -> Result<Vec<f32>, BackendError> {
        Ok(values)
    }

    fn write(&self, dst: SliceMut<'_, Vec<f32>>, values: &[f32]) -> Result<(), BackendError> {
        let dst = host_mut(dst);
        check_len("write", "values", dst.len(), values.len())?;
        dst.copy_from_slice(values);
        Ok(())
    }

    fn read(&self, src: Slice<'_, Vec<f32>>, out: &mut [f32]) -> Result<(), BackendError> {
        let src = host(&src);
        check_len("read", "out", src.len(), out.len())?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn copy(
        &self,
        src: Slice<'_, Vec<f32>>,
        dst: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        let (src, dst) = (host(&src), host_mut(dst));
        check_len("copy", "dst", src.len(), dst.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn weight<'a>(
        &self,
        tensor: TensorView<'a>,
        placement: Placement,
    ) -> Result<CpuWeight<'a>, BackendError> {
        // Group weights stay views: a group is resident only during its steps, and its pages are
        // released and read again, which a copy would defeat.
        let packed = (self.repack
            && placement == Placement::Shared
            && packed_kernel(tensor.ty(), self.isa()).is_some())
        .then(|| PackedWeight::pack(&tensor))
        .flatten();
        Ok(CpuWeight {
            view: tensor,
            packed,
        })
    }

    fn conv_weight<'a>(
        &self,
        tensor: TensorView<'a>,
        conv: &Conv2d,
    ) -> Result<CpuConvWeight<'a>, BackendError> {
        check_len(
            "conv2d",
            "weight",
            conv.weight_len()?,
            tensor.n_elements() as usize,
        )?;
        if let Some(pointwise) = PointwiseConv::new(tensor, conv, self.isa()) {
            return Ok(CpuConvWeight::Pointwise(pointwise));
        }
        let kernel = self.conv_kernel(tensor.ty())?;
        let values = match tensor.as_f32() {
            Ok(values) => Cow::Borrowed(values),
            // Another type (or, in a hand-made file, misaligned F32): an f32 copy, which a dense
            // kernel's packing replaces.
            Err(_) => {
                let mut values = vec![0.0; tensor.n_elements() as usize];
                crate::quant::dequantize(tensor.ty(), tensor.bytes(), &mut values).map_err(
                    |e| {
                        param(
                            "conv2d",
                            format!("weight '{}' cannot be read as f32: {e}", tensor.name()),
                        )
                    },
                )?;
                Cow::Owned(values)
            }
        };
        Ok(CpuConvWeight::Gemm(PreparedConv::new(
            kernel, conv, values,
        )?))
    }

    fn rope_table(&self, table: &RopeTable) -> Result<RopeTable, BackendError> {
        Ok(table.clone())
    }

    fn set_rope_table(&self, rope: &mut RopeTable, table: &RopeTable) -> Result<(), BackendError> {
        rope.copy_from(table);
        Ok(())
    }

    fn stage_group(&self, _group: usize, _weights: &[&CpuWeight<'_>]) -> Result<(), BackendError> {
        Ok(())
    }

    fn commit_group(&self, _group: usize, _staged: ()) -> Result<(), BackendError> {
        Ok(())
    }

    fn matmul(
        &self,
        weight: &CpuWeight<'_>,
        x: Slice<'_, Vec<f32>>,
        n: usize,
        y: SliceMut<'_, Vec<f32>>,
        bias: Option<Slice<'_, Vec<f32>>>,
    ) -> Result<(), BackendError> {
        let y = host_mut(y);
        let (isa, x) = (self.isa(), host(&x));
        // A packed copy exists only where `weight` found a packed kernel for this ISA.
        with_scratch(|s| match &weight.packed {
            Some(packed) => matmul_packed(isa, packed, x, n, y, &mut s.matmul),
            // Packable views (expert groups, `CPU_MAPPED`) still take the packed kernel, packing
            // each task's rows as it goes: decided per weight, so results do not depend on n.
            None if packs_per_task(isa, &weight.view) => {
                matmul_repacking(isa, &weight.view, x, n, y, &mut s.matmul)
            }
            None => matmul_with_isa(isa, &weight.view, x, n, y, &mut s.matmul),
        })?;
        if let Some(bias) = bias {
            let bias = host(&bias);
            check_len("matmul", "bias", weight.view.n_rows(), bias.len())?;
            for row in y.chunks_exact_mut(bias.len().max(1)) {
                for (value, b) in row.iter_mut().zip(bias) {
                    *value += b;
                }
            }
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: SliceMut<'_, Vec<f32>>,
        weight: Slice<'_, Vec<f32>>,
        eps: f32,
    ) -> Result<(), BackendError> {
        Ok(ops::rms_norm(host_mut(x), host(&weight), eps)?)
    }

    fn layer_norm(
        &self,
        x: SliceMut<'_, Vec<f32>>,
        dim: usize,
        weight: Option<Slice<'_, Vec<f32>>>,
        bias: Option<Slice<'_, Vec<f32>>>,
        eps: f32,
    ) -> Result<(), BackendError> {
        Ok(ops::layer_norm(
            host_mut(x),
            dim,
            weight.as_ref().map(host),
            bias.as_ref().map(host),
            eps,
        )?)
    }

    fn rms_norm_channels(
        &self,
        x: SliceMut<'_, Vec<f32>>,
        weight: Slice<'_, Vec<f32>>,
        bias: Option<Slice<'_, Vec<f32>>>,
        eps: f32,
    ) -> Result<(), BackendError> {
        Ok(ops::rms_norm_channels(
            host_mut(x),
            host(&weight),
            bias.as_ref().map(host),
            eps,
        )?)
    }

    fn batch_norm(
        &self,
        x: SliceMut<'_, Vec<f32>>,
        mean: Slice<'_, Vec<f32>>,
        inv_std: Slice<'_, Vec<f32>>,
        weight: Slice<'_, Vec<f32>>,
        bias: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        const OP: &str = "batch_norm";
        let x = host_mut(x);
        let (mean, inv_std, weight, bias) =
            (host(&mean), host(&inv_std), host(&weight), host(&bias));
        let channels = weight.len();
        for (what, v) in [("mean", mean), ("inv_std", inv_std), ("bias", bias)] {
            check_len(OP, what, channels, v.len())?;
        }
        if channels == 0 || !x.len().is_multiple_of(channels) {
            return Err(param(
                OP,
                format!("{} values are not {channels} channel planes", x.len()),
            )
            .into());
        }
        let pixels = x.len() / channels;
        if pixels == 0 {
            return Ok(());
        }
        x.par_chunks_mut(pixels).enumerate().for_each(|(c, plane)| {
            ops::kernels::shift_scale(plane, mean[c], inv_std[c]);
            let (w, b) = (weight[c], bias[c]);
            plane.iter_mut().for_each(|v| *v = *v * w + b);
        });
        Ok(())
    }

    fn unary(&self, x: SliceMut<'_, Vec<f32>>, f: Unary) -> Result<(), BackendError> {
        let x = host_mut(x);
        if x.len() > PAR_CHUNK {
            x.par_chunks_mut(PAR_CHUNK).for_each(|c| apply_unary(f, c));
        } else {
            apply_unary(f, x);
        }
        Ok(())
    }

    fn swiglu(
        &self,
        gate: SliceMut<'_, Vec<f32>>,
        up: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        let (gate, up) = (host_mut(gate), host(&up));
        check_len("swiglu", "up", gate.len(), up.len())?;
        if gate.len() > PAR_CHUNK {
            gate.par_chunks_mut(PAR_CHUNK)
                .zip(up.par_chunks(PAR_CHUNK))
                .try_for_each(|(g, u)| ops::swiglu(g, u))?;
        } else {
            ops::swiglu(gate, up)?;
        }
        Ok(())
    }

    fn add(&self, acc: SliceMut<'_, Vec<f32>>, x: Slice<'_, Vec<f32>>) -> Result<(), BackendError> {
        let (acc, x) = (host_mut(acc), host(&x));
        check_len("add", "x", acc.len(), x.len())?;
        if acc.len() > PAR_CHUNK {
            acc.par_chunks_mut(PAR_CHUNK)
                .zip(x.par_chunks(PAR_CHUNK))
                .for_each(|(a, x)| ops::kernels::add_elementwise(a, x));
        } else {
            ops::kernels::add_elementwise(acc, x);
        }
        Ok(())
    }

    fn add_gated_rows(
        &self,
        h: SliceMut<'_, Vec<f32>>,
        delta: Slice<'_, Vec<f32>>,
        gate: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        let (h, delta, gate) = (host_mut(h), host(&delta), host(&gate));
        check_rows("add_gated_rows", h.len(), gate.len())?;
        check_len("add_gated_rows", "delta", h.len(), delta.len())?;
        for (row, delta) in h
            .chunks_exact_mut(gate.len())
            .zip(delta.chunks_exact(gate.len()))
        {
            ops::kernels::add_product(row, gate, delta);
        }
        Ok(())
    }

    fn modulate_rows(
        &self,
        x: SliceMut<'_, Vec<f32>>,
        scale: Slice<'_, Vec<f32>>,
        shift: Slice<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        let (x, scale, shift) = (host_mut(x), host(&scale), host(&shift));
        check_rows("modulate_rows", x.len(), scale.len())?;
        check_len("modulate_rows", "shift", scale.len(), shift.len())?;
        for row in x.chunks_exact_mut(scale.len()) {
            ops::kernels::mul_add_elementwise(row, scale, shift);
        }
        Ok(())
    }

    fn rope(
        &self,
        x: SliceMut<'_, Vec<f32>>,
        n_heads: usize,
        table: &RopeTable,
    ) -> Result<(), BackendError> {
        Ok(ops::rope_neox(host_mut(x), n_heads, table)?)
    }

    fn attention(
        &self,
        q: Slice<'_, Vec<f32>>,
        k: Slice<'_, Vec<f32>>,
        v: Slice<'_, Vec<f32>>,
        shape: AttentionShape,
        mask: Mask,
        block: Option<ScoreBlock<'_, Vec<f32>>>,
        out: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        let out = host_mut(out);
        with_scratch(|s| {
            let Scratch {
                attention,
                block: gated,
                ..
            } = s;
            let bias = match block {
                None => None,
                Some(b) => {
                    let add = match &b.add {
                        None => None,
                        Some(add) => {
                            let (previous, gate) = (host(&add.previous), host(&add.gate));
                            check_len("attention", "bias gate", shape.n_heads, gate.len())?;
                            let per_head = checked_product("attention", &[shape.n_q, b.n_cols])?;
                            check_len(
                                "attention",
                                "bias add",
                                checked_product("attention", &[shape.n_heads, per_head])?,
                                previous.len(),
                            )?;
                            gated.clear();
                            gated.resize(previous.len(), 0.0);
                            if per_head > 0 {
                                for (head, (out, prev)) in gated
                                    .chunks_exact_mut(per_head)
                                    .zip(previous.chunks_exact(per_head))
                                    .enumerate()
                                {
                                    let g = gate[head];
                                    out.iter_mut().zip(prev).for_each(|(o, &b)| *o = g * b);
                                }
                            }
                            Some(&gated[..])
                        }
                    };
                    Some(ops::BlockBias {
                        mode: b.mode,
                        col0: b.col0,
                        n_cols: b.n_cols,
                        add,
                        readout: b.readout.map(host_mut),
                    })
                }
            };
            ops::attention(
                host(&q),
                host(&k),
                host(&v),
                shape,
                None,
                mask,
                bias,
                out,
                attention,
            )
        })?;
        Ok(())
    }

    fn conv2d(
        &self,
        conv: &Conv2d,
        weight: &CpuConvWeight<'_>,
        bias: Option<Slice<'_, Vec<f32>>>,
        input: Slice<'_, Vec<f32>>,
        hw: [usize; 2],
        out: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        if weight.conv() != conv {
            return Err(param(
                "conv2d",
                format!(
                    "weights prepared for {:?}, called as {conv:?}",
                    weight.conv()
                ),
            )
            .into());
        }
        let (input, bias, out) = (host(&input), bias.as_ref().map(host), host_mut(out));
        with_scratch(|s| match weight {
            CpuConvWeight::Pointwise(p) => {
                p.forward(self.isa(), input, hw, bias, out, &mut s.matmul)
            }
            CpuConvWeight::Gemm(g) => {
                Ok(ops::conv2d_prepared(g, input, hw, bias, out, &mut s.conv)?)
            }
        })
    }

    fn relu_linear_attention(
        &self,
        qkv: Slice<'_, Vec<f32>>,
        n_heads: usize,
        head_dim: usize,
        n_pixels: usize,
        eps: f32,
        out: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        let out = host_mut(out);
        with_scratch(|s| {
            ops::relu_linear_attention(
                host(&qkv),
                n_heads,
                head_dim,
                n_pixels,
                eps,
                out,
                &mut s.linear_attention,
            )
        })?;
        Ok(())
    }

    fn upsample_nearest(
        &self,
        input: Slice<'_, Vec<f32>>,
        channels: usize,
        hw: [usize; 2],
        factor: usize,
        out: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Ok(ops::upsample_nearest(
            host(&input),
            channels,
            hw,
            factor,
            host_mut(out),
        )?)
    }

    fn pixel_shuffle(
        &self,
        input: Slice<'_, Vec<f32>>,
        in_channels: usize,
        hw: [usize; 2],
        factor: usize,
        out: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Ok(ops::pixel_shuffle(
            host(&input),
            in_channels,
            hw,
            factor,
            host_mut(out),
        )?)
    }

    fn repeat_channels(
        &self,
        input: Slice<'_, Vec<f32>>,
        channels: usize,
        hw: [usize; 2],
        repeats: usize,
        out: SliceMut<'_, Vec<f32>>,
    ) -> Result<(), BackendError> {
        Ok(ops::repeat_channels(
            host(&input),
            channels,
            hw,
            repeats,
            host_mut(out),
        )?)
    }
}

/// `len` values are whole rows of `row` (> 0).
fn check_rows(op: &'static str, len: usize, row: usize) -> Result<(), BackendError> {
    if row == 0 || !len.is_multiple_of(row) {
        return Err(param(op, format!("{len} values are not whole rows of {row}")).into());
    }
    Ok(())
}
