//! Times the DC-AE decoder of a GGUF file (e.g. `latte convert --synthetic latte-flow-2b`): decodes
//! a seeded latent of the file's channel count, prints load time, per-decode times, the predicted
//! peak working memory, and optionally writes the image as PNG.
//!
//!     cargo run --release --example dcae_decode -- model.gguf [--size 8] [--runs 3] [--png out.png]
//!         [--raw out.f32]
//!
//! The latent is `rng::fill_normal(42)` (the reference's noise RNG), `--raw` writes the decoded
//! image `[3, H, W]` as little-endian f32, for `tools/check_dcae_decode.py` to compare with
//! diffusers.

use std::time::Instant;

use latte::model::dcae::{Decoder, DecoderScratch};
use latte::model::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: dcae_decode MODEL.gguf [--size N] [--runs N] [--png OUT]")?;
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let size: usize = option("--size").map_or(Ok(8), |s| s.parse())?;
    let runs: usize = option("--runs").map_or(Ok(3), |s| s.parse())?;

    let file = ModelFile::open(path)?;
    let start = Instant::now();
    let decoder = Decoder::load(&file)?;
    println!("load: {:.3} s", start.elapsed().as_secs_f64());
    let c = decoder.latent_channels();
    let [oh, ow] = decoder.output_hw(size, size)?;
    let mut latent = vec![0f32; c * size * size];
    latte::rng::fill_normal(42, &mut latent);
    println!(
        "latent {c}×{size}×{size} → image 3×{oh}×{ow}; predicted working memory {:.1} MiB; {} threads",
        decoder.predicted_working_bytes(size, size)? as f64 / (1 << 20) as f64,
        rayon::current_num_threads()
    );
    let mut scratch = DecoderScratch::default();
    let mut image = Vec::new();
    for run in 0..runs {
        let start = Instant::now();
        image = decoder.decode_flow_latent(&latent, size, size, &mut scratch)?;
        println!("decode {run}: {:.3} s", start.elapsed().as_secs_f64());
    }
    if let Some(out) = option("--raw") {
        let bytes: Vec<u8> = image.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&out, bytes)?;
        println!("wrote {out}");
    }
    if let Some(out) = option("--png") {
        latte::image::write_png(out.as_ref(), &image, oh, ow, &[("model", path)])?;
        println!("wrote {out}");
    }
    Ok(())
}
