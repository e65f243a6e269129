//! Decoding allocates nothing per token (issue 5, item 9): a counting global allocator sees the
//! same number of allocations for an 8-token answer as for a 2-token one (everything else, the
//! prompt, prefill and buffers, is the same in both), on the fixture model whose greedy answer
//! never stops early.

use std::ops::ControlFlow;
mod reference_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use latte::model::ModelFile;
use latte::pipeline::{DescribeRequest, Describer};
use latte::sampling::SamplingParams;
use reference_support::{convert, Oracle};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decoding_does_not_allocate_per_token() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("base", "f32", tmp.path())).unwrap();
    let describer = Describer::load(&file).unwrap();
    let o = Oracle::open("base");
    let shape = o.shape("und.image");
    let image = latte::image::RgbImage::new(shape[1], shape[0], o.u8("und.image")).unwrap();
    // One worker thread, so no other thread allocates while we count.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let count = |max_tokens: usize| {
        pool.install(|| {
            let request = DescribeRequest::question(
                Some(&image),
                "What shape is it?",
                max_tokens,
                SamplingParams::greedy(),
            );
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let stats = describer
                .describe(&request, &mut |_, _| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(
                stats.generated_tokens, max_tokens,
                "the answer stopped early"
            );
            ALLOCATIONS.load(Ordering::Relaxed) - before
        })
    };
    // Warm-up (lazy statics, and the backend's per-thread working memory, which keeps its
    // high-water mark across calls: warming at the longer answer means neither counted call grows it).
    count(8);
    let short = count(2);
    let long = count(8);
    println!("allocations: 2 tokens {short}, 8 tokens {long}");
    assert_eq!(short, long);
}
