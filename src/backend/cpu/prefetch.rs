//! The software prefetch the weight-streaming loops share (the row-major dot kernels, Q4_0
//! packing). It owns only the hint and its distance; it must not read or write memory.

/// Bytes ahead of the current block that [`prefetch_ahead`] asks for (tuned on decoding).
#[cfg(target_arch = "x86_64")]
const PREFETCH_DISTANCE: usize = 8192;

/// Asks for the bytes [`PREFETCH_DISTANCE`] ahead of `p` (x86-64; elsewhere nothing). The
/// hardware prefetchers stop at each 4 KiB page, and weights streamed from memory once per pass
/// (they do not fit in any cache) would otherwise start every page with a miss.
#[inline(always)]
pub(crate) fn prefetch_ahead(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and changes no memory, whatever the address
    // (hence `wrapping_add`: it may point past the slice); SSE is part of every x86-64 CPU.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_DISTANCE) as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    /// The hint may point anywhere, even past the end of memory the program owns.
    #[test]
    fn prefetching_past_a_slice_is_harmless() {
        let bytes = [1u8; 16];
        super::prefetch_ahead(bytes.as_ptr());
        super::prefetch_ahead(std::ptr::null());
        super::prefetch_ahead(usize::MAX as *const u8);
        assert_eq!(bytes, [1u8; 16]);
    }
}
