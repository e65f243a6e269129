//! The GPU the wgpu tests run on: the adapter `--device wgpu` would take (in CI, Mesa's lavapipe),
//! opened once per test binary. Without one a test returns early, unless `LATTE_REQUIRE_GPU=1`,
//! which turns a missing GPU into a failure so that a prepared GPU run cannot pass silently.

use std::sync::OnceLock;

use latte::backend::wgpu::{AdapterChoice, WgpuBackend};

pub fn gpu() -> Option<&'static WgpuBackend> {
    static GPU: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    let gpu = GPU
        .get_or_init(|| match WgpuBackend::open(AdapterChoice::Best) {
            Ok(gpu) => gpu,
            Err(e) => {
                eprintln!("no GPU adapter: {e}");
                None
            }
        })
        .as_ref();
    if gpu.is_none() {
        assert!(
            std::env::var("LATTE_REQUIRE_GPU").as_deref() != Ok("1"),
            "LATTE_REQUIRE_GPU=1 but no GPU adapter could be opened"
        );
        eprintln!("no GPU adapter: skipped");
    }
    gpu
}
