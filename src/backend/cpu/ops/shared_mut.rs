//! A mutable f32 buffer that parallel tasks carve disjoint, strided pieces from: the one layout
//! `par_chunks_mut` cannot express (e.g. a pixel tile spans every channel plane of a CHW image).
//!
//! It owns nothing and checks bounds on every access; disjointness between tasks is the caller's
//! contract, stated at each use.

use std::marker::PhantomData;

pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the only access is `slice`, whose callers guarantee that ranges used concurrently are
// disjoint; the `&'a mut` borrow held in `_borrow` keeps the buffer alive and unaliased meanwhile.
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub(crate) fn new(x: &'a mut [f32]) -> Self {
        SharedMut {
            ptr: x.as_mut_ptr(),
            len: x.len(),
            _borrow: PhantomData,
        }
    }

    /// The sub-slice `start..start + len`; panics when it is out of bounds (a bug in the caller's
    /// index arithmetic, never reachable from user input that passed the op's shape checks).
    ///
    /// # Safety
    /// No other live reference may overlap this range while the returned slice is in use.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds by the assert above; exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
