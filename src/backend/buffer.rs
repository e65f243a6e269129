//! Views into a backend's f32 buffers: [`Slice`] (read) and [`SliceMut`] (write) name a buffer and
//! a range of its elements, so that model code can address part of a device buffer (one layer's
//! keys after the prompt's, one frame of a vision sequence) the way it would slice a `Vec`.
//!
//! This module owns the range arithmetic; it must not know what a buffer is made of (a `Vec<f32>`
//! on the CPU, a GPU allocation on wgpu). Ranges outside a buffer are a bug in the caller and panic,
//! as slice indexing does; shapes from files are checked before they become ranges.

use std::ops::{Bound, Range, RangeBounds};

/// An f32 array owned by a backend.
pub trait DeviceBuffer {
    /// Elements it holds.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All of it, for reading.
    fn all(&self) -> Slice<'_, Self>
    where
        Self: Sized,
    {
        Slice {
            buffer: self,
            offset: 0,
            len: self.len(),
        }
    }

    /// All of it, for writing.
    fn all_mut(&mut self) -> SliceMut<'_, Self>
    where
        Self: Sized,
    {
        let len = self.len();
        SliceMut {
            buffer: self,
            offset: 0,
            len,
        }
    }

    /// Elements `range`, for reading.
    fn slice(&self, range: impl RangeBounds<usize>) -> Slice<'_, Self>
    where
        Self: Sized,
    {
        let r = resolve(range, self.len());
        Slice {
            buffer: self,
            offset: r.start,
            len: r.end - r.start,
        }
    }

    /// Elements `range`, for writing.
    fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> SliceMut<'_, Self>
    where
        Self: Sized,
    {
        let r = resolve(range, self.len());
        SliceMut {
            buffer: self,
            offset: r.start,
            len: r.end - r.start,
        }
    }
}

impl DeviceBuffer for Vec<f32> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// `len` elements of `buffer` from `offset`, read-only.
#[derive(Debug)]
pub struct Slice<'b, T> {
    pub buffer: &'b T,
    pub offset: usize,
    pub len: usize,
}

// Manual impls: a derive would require `T: Clone`.
impl<T> Clone for Slice<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Slice<'_, T> {}

impl<'b, T> Slice<'b, T> {
    /// The element range it covers in its buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }

    /// A part of this view (`range` relative to its start).
    pub fn slice(&self, range: impl RangeBounds<usize>) -> Slice<'b, T> {
        let r = resolve(range, self.len);
        Slice {
            buffer: self.buffer,
            offset: self.offset + r.start,
            len: r.end - r.start,
        }
    }
}

/// `len` elements of `buffer` from `offset`, writable.
#[derive(Debug)]
pub struct SliceMut<'b, T> {
    pub buffer: &'b mut T,
    pub offset: usize,
    pub len: usize,
}

impl<T> SliceMut<'_, T> {
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }

    /// A shorter-lived handle on the same elements.
    pub fn reborrow(&mut self) -> SliceMut<'_, T> {
        SliceMut {
            buffer: self.buffer,
            offset: self.offset,
            len: self.len,
        }
    }

    /// The same elements, for reading.
    pub fn as_slice(&self) -> Slice<'_, T> {
        Slice {
            buffer: self.buffer,
            offset: self.offset,
            len: self.len,
        }
    }

    /// A part of this view (`range` relative to its start).
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> SliceMut<'_, T> {
        let r = resolve(range, self.len);
        SliceMut {
            buffer: self.buffer,
            offset: self.offset + r.start,
            len: r.end - r.start,
        }
    }
}

impl Slice<'_, Vec<f32>> {
    /// The host values (CPU buffers only).
    pub fn host(&self) -> &[f32] {
        &self.buffer[self.range()]
    }
}

impl SliceMut<'_, Vec<f32>> {
    /// The host values (CPU buffers only).
    pub fn host(&mut self) -> &mut [f32] {
        let r = self.range();
        &mut self.buffer[r]
    }
}

fn resolve(range: impl RangeBounds<usize>, len: usize) -> Range<usize> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    assert!(
        start <= end && end <= len,
        "buffer range {start}..{end} outside {len} elements"
    );
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_compose_relative_ranges() {
        let mut v = vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        let s = v.slice(1..5);
        assert_eq!(s.slice(1..3).host(), &[2.0, 3.0]);
        let mut m = v.slice_mut(2..);
        m.slice_mut(..2).host().fill(9.0);
        assert_eq!(v, [0.0, 1.0, 9.0, 9.0, 4.0, 5.0]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn out_of_range_panics() {
        let v = vec![0.0f32; 3];
        let _ = v.slice(2..4);
    }
}
