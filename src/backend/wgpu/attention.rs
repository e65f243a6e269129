//! Attention on the device: the three passes of `attention*.wgsl` over chunks of query rows (the
//! score buffer is bounded), with the TCRA score block, and DC-AE's ReLU linear attention.

use super::kernels::Kernel;
use super::ops::{raw_of, u32_of};
use super::{lock, Bind, WgpuBackend, WgpuBuffer};
use crate::backend::op_error::{check_len, checked_product, param};
use crate::backend::{
    AttentionShape, Backend, BackendError, BiasMode, Mask, ScoreBlock, Slice, SliceMut,
};

/// Score values one attention chunk may hold (64 MiB).
const SCORE_BUDGET: usize = 16 << 20;
/// Query rows one attention dispatch may cover (a workgroup-grid dimension).
const MAX_ROWS: usize = 65535;
/// The largest head dimension the score kernel holds in workgroup memory.
const MAX_HEAD_DIM: usize = 256;

impl WgpuBackend {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_into(
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

    pub(super) fn linear_attention_into(
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
}
