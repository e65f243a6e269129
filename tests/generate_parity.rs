//! `Generator` end to end from the converted fixture checkpoints (tests/fixtures/reference/, written
//! by the PyTorch reference): prompt ids → our text decoder's prefill → prompt K/V (both `ctx_kv`
//! switches) → layerwise (and dense) sampling → DC-AE decode → 8-bit pixels; and determinism: the
//! same seed gives the same PNG bytes on every run and with 1 or 2 threads.
//!
//! Tolerances (errors are max |ours − reference| / max(1, max |reference|), `LATTE_PRINT_ERRORS=1`
//! prints them): prompt K/V now come from our text decoder rather than the fixture, which adds
//! its own f32 reordering. Measured: ≤ 4.6e-7 on K/V, ≤ 2.3e-6 on final latents (alt, Heun);
//! we allow 5e-6 on K/V and 2e-5 on final latents (about 10x headroom). Pixels: the issue's
//! ±2/255 on the 8-bit image (measured: every pixel exact in all three configs).

use latte::image::png::{to_rgb8, write_png};
use latte::model::text::TextScratch;
use latte::model::ModelFile;
use latte::pipeline::generate::{GenerateOptions, Generator, Quiet};
use latte::pipeline::prompt_context::prefill;
use latte::pipeline::SamplerKind;
use latte::residency::ReleasePolicy;

mod reference_support;
use reference_support::{
    assert_close, convert, fixture_dir, max_level_difference, Oracle, CONFIGS,
};

fn manifest(config: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir(config).join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(fixture: &Oracle, name: &str) -> Vec<u32> {
    fixture.i64(name).iter().map(|&i| i as u32).collect()
}

fn options(fixture: &Oracle, config: &str, dense: bool) -> GenerateOptions {
    let m = manifest(config);
    GenerateOptions {
        steps: m["steps"].as_u64().unwrap() as usize,
        guidance: m["guidance_scale"].as_f64().unwrap() as f32,
        seed: fixture.i64("gen.seed")[0] as u64,
        sampler: match m["sampler"].as_str().unwrap() {
            "heun" => SamplerKind::Heun,
            _ => SamplerKind::Euler,
        },
        dense,
        device_budget: None,
    }
}

#[test]
fn generation_matches_the_reference_from_prompt_ids() {
    let tmp = tempfile::tempdir().unwrap();
    for &config in CONFIGS {
        let fixture = Oracle::open(config);
        let file = ModelFile::open(convert(config, "f32", tmp.path())).unwrap();
        let generator = Generator::load(&file, ReleasePolicy::ReleaseFinished).unwrap();
        let cond_ids = ids(&fixture, "gen.cond_ids");
        let uncond_ids = ids(&fixture, "gen.uncond_ids");

        // Our prefill gives the reference's prompt K/V for both prompts.
        let mut scratch = TextScratch::new();
        for (which, ids) in [("cond", &cond_ids), ("uncond", &uncond_ids)] {
            let kv = prefill(
                generator.text(),
                generator.replica(),
                ids,
                None,
                &mut scratch,
            )
            .unwrap();
            for l in 0..generator.replica().config().layer_count {
                let (_, k) = fixture.heads_to_tokens(&format!("gen.{which}.k.{l}"));
                let (_, v) = fixture.heads_to_tokens(&format!("gen.{which}.v.{l}"));
                let layer = kv.layer(l);
                assert_close(
                    &format!("{config} {which} keys {l}"),
                    layer.keys.host(),
                    &k,
                    5e-6,
                );
                assert_close(
                    &format!("{config} {which} values {l}"),
                    layer.values.host(),
                    &v,
                    5e-6,
                );
            }
        }

        let generated = generator
            .generate(
                &cond_ids,
                &uncond_ids,
                &options(&fixture, config, false),
                &mut Quiet,
            )
            .unwrap();
        assert_close(
            &format!("{config}: final latent"),
            &generated.latent,
            &fixture.f32("gen.final_latent"),
            2e-5,
        );
        assert_eq!(
            fixture.shape("gen.image_u8"),
            vec![generated.height, generated.width, 3]
        );
        let pixels = to_rgb8(&generated.image, generated.height, generated.width).unwrap();
        let want = fixture.u8("gen.image_u8");
        let worst = max_level_difference(&pixels, &want);
        if std::env::var_os("LATTE_PRINT_ERRORS").is_some() {
            eprintln!("{config}: worst pixel difference {worst}/255");
        }
        assert!(worst <= 2, "{config}: a pixel differs by {worst}/255");
        // Phases: prefill, at least one group, decode.
        let names: Vec<&str> = generated.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"prefill"), "{names:?}");
        assert_eq!(names.last(), Some(&"decode"), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("group ")), "{names:?}");

        if fixture.has("dense.final_latent") {
            let dense = generator
                .generate(
                    &cond_ids,
                    &uncond_ids,
                    &options(&fixture, config, true),
                    &mut Quiet,
                )
                .unwrap();
            assert_close(
                &format!("{config}: dense final latent"),
                &dense.latent,
                &fixture.f32("dense.final_latent"),
                2e-5,
            );
        }
    }
}

#[test]
fn same_seed_same_png_across_runs_and_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "base";
    let fixture = Oracle::open(config);
    let file = ModelFile::open(convert(config, "f32", tmp.path())).unwrap();
    let generator = Generator::load(&file, ReleasePolicy::Keep).unwrap();
    let cond_ids = ids(&fixture, "gen.cond_ids");
    let uncond_ids = ids(&fixture, "gen.uncond_ids");
    let mut opts = options(&fixture, config, false);
    opts.steps = 6;
    let png = |opts: &GenerateOptions, threads: usize, name: &str| -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let g = pool
            .install(|| generator.generate(&cond_ids, &uncond_ids, opts, &mut Quiet))
            .unwrap();
        let path = tmp.path().join(name);
        write_png(&path, &g.image, g.height, g.width, &[("seed", "1234")]).unwrap();
        std::fs::read(path).unwrap()
    };
    let one = png(&opts, 1, "one.png");
    assert_eq!(one, png(&opts, 1, "one-again.png"), "two runs differ");
    assert_eq!(one, png(&opts, 2, "two.png"), "1 and 2 threads differ");
    // An empty unconditional prompt (what --prompt-ids without --uncond-ids gives): the image
    // tokens then start at position 0 and attend to no prompt key.
    let g = generator
        .generate(&cond_ids, &[], &opts, &mut Quiet)
        .unwrap();
    assert!(g.image.iter().all(|v| v.is_finite()));
    // A different seed gives a different image (the comparison above can fail).
    opts.seed += 1;
    assert_ne!(one, png(&opts, 1, "other-seed.png"));
}
