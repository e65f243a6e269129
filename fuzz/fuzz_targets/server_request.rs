//! Fuzzes what `latte serve` reads from a client before any model work: a request body into
//! `server::api::parse` and the chat / images translation into jobs (message roles and parts,
//! `data:` URLs, base64, the image decoders under a small pixel limit, sampling fields, stop
//! strings, sizes and counts). Nothing may panic, allocate without bound or loop; a refusal is an
//! `ApiError` whose status is a client error (4xx), and an accepted job stays within the limits.
//!
//! Registered in `fuzz/Cargo.toml` as
//! `[[bin]] name = "server_request", path = "fuzz_targets/server_request.rs", test = false,
//! doc = false, bench = false`. Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run server_request fuzz/corpus/server_request fuzz/seeds/server_request`
#![no_main]

use latte::server::api::{
    parse, ChatRequest, ImagesRequest, MAX_IMAGES_PER_REQUEST, MAX_STOP_STRINGS,
};
use libfuzzer_sys::fuzz_target;

const MAX_PIXELS: u64 = 1 << 14;
const CONTEXT: usize = 512;

fuzz_target!(|data: &[u8]| {
    let refused = |e: latte::server::error::ApiError| {
        assert!(
            e.status.is_client_error(),
            "{} for {:?}",
            e.status,
            e.message
        );
        std::hint::black_box(e.body().to_string());
    };
    match parse::<ChatRequest>(data).and_then(|r| r.into_job(MAX_PIXELS, CONTEXT)) {
        Ok(job) => {
            assert!(!job.messages.is_empty());
            assert!(job.max_tokens >= 1 && job.max_tokens <= CONTEXT);
            assert!(job.stop.len() <= MAX_STOP_STRINGS);
            assert!((0.0..=2.0).contains(&job.sampling.temperature));
            if let Some(image) = &job.image {
                assert!((image.width * image.height) as u64 <= MAX_PIXELS);
                assert_eq!(image.pixels.len(), image.width * image.height * 3);
            }
            let parts: usize = job.messages.iter().map(|m| m.image_parts()).sum();
            assert_eq!(parts, usize::from(job.image.is_some()));
        }
        Err(e) => refused(e),
    }
    match parse::<ImagesRequest>(data).and_then(|r| r.into_job([64, 64])) {
        Ok(job) => {
            assert!((1..=MAX_IMAGES_PER_REQUEST).contains(&job.n));
            assert!(!job.prompt.trim().is_empty());
        }
        Err(e) => refused(e),
    }
});
