//! The decoder's working memory: the current activation image and three temporaries, plus the
//! linear attention's scratch. Each buffer keeps one role in every layer and only ever grows, so
//! after the first decode of a size nothing is allocated again, and the peak is exactly the sum of
//! each buffer's largest need ([`BufferSizes`], which every layer states for itself; the decoder's
//! `predicted_working_bytes` adds them up before running anything).

use rayon::prelude::*;

use crate::backend::cpu::ops::gemm::GemmScratchSizes;
use crate::backend::cpu::ops::ConvScratch;

/// Reusable buffers for [`super::Decoder::decode`]; start with `DecoderScratch::default()`.
#[derive(Default)]
pub struct DecoderScratch {
    /// The activation flowing through the decoder, `[C, H, W]` in its first `C·H·W` values.
    pub(super) x: Vec<f32>,
    pub(super) a: Vec<f32>,
    pub(super) b: Vec<f32>,
    pub(super) c: Vec<f32>,
    pub(super) attention: Vec<f32>,
    /// The convolutions' packing buffers (see [`ConvScratch`]).
    pub(super) conv: ConvScratch,
}

impl DecoderScratch {
    /// f32 values held now (the high-water mark of every decode so far).
    pub fn held_values(&self) -> usize {
        self.x.len()
            + self.a.len()
            + self.b.len()
            + self.c.len()
            + self.attention.len()
            + self.conv.held_values()
    }
}

/// Elements a layer needs in each buffer of [`DecoderScratch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferSizes {
    pub x: usize,
    pub a: usize,
    pub b: usize,
    pub c: usize,
    pub attention: usize,
    /// The convolutions' packing buffers.
    pub conv: GemmScratchSizes,
}

impl BufferSizes {
    /// The element-wise maximum: buffers sized for both layers.
    pub fn max(self, o: BufferSizes) -> BufferSizes {
        BufferSizes {
            x: self.x.max(o.x),
            a: self.a.max(o.a),
            b: self.b.max(o.b),
            c: self.c.max(o.c),
            attention: self.attention.max(o.attention),
            conv: self.conv.max(o.conv),
        }
    }

    /// All values together, or `None` on overflow.
    pub fn total(self) -> Option<usize> {
        let conv = self.conv.total(rayon::current_num_threads())?;
        [self.a, self.b, self.c, self.attention, conv]
            .iter()
            .try_fold(self.x, |t, &v| t.checked_add(v))
    }
}

/// The product of `dims`, `None` on overflow (sizes come from the caller's latent shape).
pub(super) fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |t, &d| t.checked_mul(d))
}

/// The first `n` values of `v`, growing it (never shrinking) to hold them.
pub(super) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// `x += y` element-wise (the residual connections), in parallel chunks.
pub(super) fn add_assign(x: &mut [f32], y: &[f32]) {
    const CHUNK: usize = 1 << 15;
    x.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(a, b)| *a += b));
}
