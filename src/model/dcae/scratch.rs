//! The decoder's working memory: the current activation image and three temporaries, on the
//! decoder's backend. Each buffer keeps one role in every layer and only ever grows, so after the
//! first decode of a size nothing is allocated again, and the peak is exactly the sum of each
//! buffer's largest need plus the backend's own working memory ([`BufferSizes`], which every
//! layer states for itself; the decoder's `predicted_working_bytes` adds them up before running
//! anything).

use crate::backend::{ensure_len, Backend, BackendError, DeviceBuffer, ScratchSizes};

/// Reusable buffers for [`super::Decoder::decode`]; start with `DecoderScratch::default()`.
pub struct DecoderScratch<B: Backend = crate::backend::cpu::CpuBackend> {
    /// The activation flowing through the decoder, `[C, H, W]` in its first `C·H·W` values.
    pub(super) x: B::Buffer,
    pub(super) a: B::Buffer,
    pub(super) b: B::Buffer,
    pub(super) c: B::Buffer,
}

impl<B: Backend> Default for DecoderScratch<B> {
    fn default() -> Self {
        DecoderScratch {
            x: Default::default(),
            a: Default::default(),
            b: Default::default(),
            c: Default::default(),
        }
    }
}

impl<B: Backend> DecoderScratch<B> {
    /// f32 values held now in the four buffers (the high-water mark of every decode so far; the
    /// backend's own working memory is not counted here).
    pub fn held_values(&self) -> usize {
        self.x.len() + self.a.len() + self.b.len() + self.c.len()
    }
}

/// Elements a layer needs in each buffer of [`DecoderScratch`], and of the backend's working
/// memory (linear attention, convolution packing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferSizes {
    pub x: usize,
    pub a: usize,
    pub b: usize,
    pub c: usize,
    pub attention: usize,
    pub conv: ScratchSizes,
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

    /// All values together with `threads` backend worker threads, or `None` on overflow.
    pub fn total(self, threads: usize) -> Option<usize> {
        let conv = self.conv.total(threads)?;
        [self.a, self.b, self.c, self.attention, conv]
            .iter()
            .try_fold(self.x, |t, &v| t.checked_add(v))
    }
}

/// The product of `dims`, `None` on overflow (sizes come from the caller's latent shape).
pub(super) fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |t, &d| t.checked_mul(d))
}

/// Grows `buffer` to hold at least `n` values (contents are not kept: each use overwrites).
pub(super) fn grow<B: Backend>(
    backend: &B,
    buffer: &mut B::Buffer,
    n: usize,
) -> Result<(), BackendError> {
    ensure_len(backend, buffer, n)
}
