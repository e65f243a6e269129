//! Generation from a prompt that holds an image, against the PyTorch reference
//! (tools/reference/make_fixtures.py → tests/fixtures/reference/{base,alt}/image_prompt.safetensors,
//! whose prompt K/V come from transformers' Qwen2-VL forward with the image spliced in and
//! `get_rope_index` positions): ctx_kv = frozen (base) and replica (alt, keys rotated at the
//! prompt's (t, h, w) positions). Our tokenizer and template layout give the reference's ids, our
//! positions and next free position are exact, then prefill → per-evaluation velocities → final
//! latent → pixels.
//!
//! Tolerances (scaled errors, max |ours − reference| / max(1, max |reference|);
//! `LATTE_PRINT_ERRORS=1` prints them), those of the text-prompt parity tests: 5e-6 on prompt K/V
//! and 2e-5 on final latents (tests/generate_parity.rs), ±2/255 on pixels. Measured: K/V ≤ 7.7e-7
//! (the image adds our vision tower's f32 reordering, tests/vision_parity.rs), final latents
//! ≤ 4.4e-6 (alt, Heun), pixels ≤ 1/255. Velocities: tests/flow_parity.rs allows 2e-5 with the
//! fixture's own K/V; here the K/V are ours and each evaluation runs at our own x_t, which has
//! drifted by the steps before, and guidance (s = 3) scales the cond − uncond difference: measured
//! ≤ 1.3e-5 (alt's last Heun corrector; 1.2e-6 at the first evaluation), so we allow 4e-5, the
//! final-latent bound of tests/flow_parity.rs (3x headroom). Getting the image tokens' start wrong
//! (P instead of the next free position) moves the first conditional velocity by 1.8e-2.

use latte::image::png::to_rgb8;
use latte::image::RgbImage;
use latte::model::text::TextScratch;
use latte::model::ModelFile;
use latte::pipeline::generate::{GenerateOptions, Generator, Quiet};
use latte::pipeline::image_prompt::{embed_prompt, expand_image_pad};
use latte::pipeline::prompt_context::{image_prompt_text, prefill};
use latte::pipeline::{sample, Evaluation, SamplerKind, SamplingObserver, SamplingOptions};
use latte::residency::ReleasePolicy;
use latte::tokenizer::Tokenizer;

mod reference_support;
use reference_support::{assert_close, convert, fixture_dir, max_level_difference, Oracle};

const KV_TOLERANCE: f32 = 5e-6;
const VELOCITY_TOLERANCE: f32 = 4e-5;
const LATENT_TOLERANCE: f32 = 2e-5;

/// The configurations with an image-prompt fixture: ctx_kv frozen and replica.
const IMAGE_CONFIGS: &[&str] = &["base", "alt"];

fn manifest(config: &str) -> serde_json::Value {
    let path = fixture_dir(config).join("image_prompt.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_image(fixture: &Oracle) -> RgbImage {
    let shape = fixture.shape("img.image");
    RgbImage::new(shape[1], shape[0], fixture.u8("img.image")).unwrap()
}

/// Checks each evaluation's velocities against the fixture.
struct Checker<'f> {
    fixture: &'f Oracle,
    config: &'static str,
    evaluations: usize,
}

impl SamplingObserver for Checker<'_> {
    fn evaluation(&mut self, e: &Evaluation<'_>) {
        let f = self.fixture;
        let at = |name: &str| format!("img.eval{}.{name}", e.index);
        let what = |name: &str| format!("{} image prompt: eval {} {name}", self.config, e.index);
        assert_eq!(f.f32(&at("t"))[0], e.t as f32, "{}", what("t"));
        assert_eq!(f.i64(&at("group"))[0], e.group as i64, "{}", what("group"));
        let pairs = [
            ("v_cond", e.v_cond),
            ("v_uncond", e.v_uncond.unwrap()),
            ("v", e.v),
        ];
        for (name, got) in pairs {
            assert_close(&what(name), got, &f.f32(&at(name)), VELOCITY_TOLERANCE);
        }
        self.evaluations += 1;
    }
}

#[test]
fn generation_with_an_image_in_the_prompt_matches_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    for &config in IMAGE_CONFIGS {
        let fixture = Oracle::open_path(&fixture_dir(config).join("image_prompt.safetensors"));
        let text_fixture = Oracle::open(config);
        let m = manifest(config);
        let file = ModelFile::open(convert(config, "f32", tmp.path())).unwrap();
        let generator = Generator::load(&file, ReleasePolicy::Keep).unwrap();
        let replica = generator.replica();
        let c = replica.config();
        let image = fixture_image(&fixture);

        // The prompt: our template layout and tokenizer give the reference's ids.
        let tokenizer = Tokenizer::from_model_file(&file).unwrap();
        let prompt = m["prompt"].as_str().unwrap();
        let template_ids = tokenizer
            .encode(&image_prompt_text(c, prompt), true)
            .unwrap();
        let encoded = generator.encode_image(&image).unwrap();
        // What --dry-run counts without running the tower.
        assert_eq!(generator.image_tokens(&image).unwrap(), encoded.tokens());
        let ids = expand_image_pad(&template_ids, encoded.token_id, encoded.tokens()).unwrap();
        let want_ids: Vec<u32> = fixture.u32s("img.cond_ids");
        assert_eq!(ids, want_ids, "{config}: prompt ids");

        // Positions: transformers' get_rope_index, and its next free position.
        let mut embeddings = vec![0.0; ids.len() * generator.text().config().hidden];
        let (positions, next) =
            embed_prompt(generator.text(), &ids, Some(&encoded), &mut embeddings).unwrap();
        let want = fixture.i64("img.positions");
        let p = ids.len();
        for (i, pos) in positions.iter().enumerate() {
            let expected = [want[i], want[p + i], want[2 * p + i]].map(|x| x as u32);
            assert_eq!(*pos, expected, "{config}: position of token {i}");
        }
        let start = fixture.i64("img.start")[0] as usize;
        assert_eq!(next as usize, start, "{config}: next free position");
        assert!(start < p, "{config}: the image's tokens share positions");

        // Prefill: the prompt K/V of the reference, image tokens starting at its next position.
        let mut scratch = TextScratch::new();
        let cond = prefill(
            generator.text(),
            replica,
            &ids,
            Some(&encoded),
            &mut scratch,
        )
        .unwrap();
        assert_eq!(cond.image_start(), start, "{config}");
        for l in 0..c.layer_count {
            let (_, k) = fixture.heads_to_tokens(&format!("img.cond.k.{l}"));
            let (_, v) = fixture.heads_to_tokens(&format!("img.cond.v.{l}"));
            let layer = cond.layer(l);
            assert_close(
                &format!("{config} keys {l}"),
                layer.keys.host(),
                &k,
                KV_TOLERANCE,
            );
            assert_close(
                &format!("{config} values {l}"),
                layer.values.host(),
                &v,
                KV_TOLERANCE,
            );
        }
        let uncond_ids = text_fixture.u32s("gen.uncond_ids");
        let uncond = prefill(generator.text(), replica, &uncond_ids, None, &mut scratch).unwrap();

        // Sampling: every evaluation's velocities.
        let steps = m["steps"].as_u64().unwrap() as usize;
        let guidance = m["guidance_scale"].as_f64().unwrap() as f32;
        let sampler = match m["sampler"].as_str().unwrap() {
            "heun" => SamplerKind::Heun,
            _ => SamplerKind::Euler,
        };
        let seed = fixture.i64("img.seed")[0] as u64;
        let options = GenerateOptions {
            steps,
            guidance,
            seed,
            sampler,
            dense: false,
            device_budget: None,
        };
        let schedule = generator.schedule(&options).unwrap();
        let mut noise = vec![0.0; c.latent_len()];
        latte::rng::fill_normal(seed, &mut noise);
        let mut checker = Checker {
            fixture: &fixture,
            config,
            evaluations: 0,
        };
        let latent = sample(
            replica,
            &schedule,
            &noise,
            &cond,
            Some(&uncond),
            &SamplingOptions {
                sampler,
                guidance,
                dense: false,
            },
            &mut checker,
        )
        .unwrap();
        let per_step = if sampler == SamplerKind::Heun { 2 } else { 1 };
        assert_eq!(checker.evaluations, steps * per_step, "{config}");
        assert_close(
            &format!("{config}: sampled final latent"),
            &latent,
            &fixture.f32("img.final_latent"),
            LATENT_TOLERANCE,
        );

        // The whole Generator from the template ids (one pad) and the image.
        let generated = generator
            .generate_with_image(
                &template_ids,
                Some(&image),
                &uncond_ids,
                &options,
                &mut Quiet,
            )
            .unwrap();
        assert_close(
            &format!("{config}: generated final latent"),
            &generated.latent,
            &fixture.f32("img.final_latent"),
            LATENT_TOLERANCE,
        );
        let pixels = to_rgb8(&generated.image, generated.height, generated.width).unwrap();
        let want = fixture.u8("img.image_u8");
        let worst = max_level_difference(&pixels, &want);
        if std::env::var_os("LATTE_PRINT_ERRORS").is_some() {
            eprintln!("{config} image prompt: worst pixel difference {worst}/255");
        }
        assert!(worst <= 2, "{config}: a pixel differs by {worst}/255");
        // The image matters: the text-only generation of the same seed lands elsewhere.
        assert!(
            fixture
                .f32("img.final_latent")
                .iter()
                .zip(&text_fixture.f32("gen.final_latent"))
                .any(|(a, b)| (a - b).abs() > 1e-2),
            "{config}"
        );
    }
}

#[test]
fn image_prompt_errors_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("base", "f32", tmp.path())).unwrap();
    let generator = Generator::load(&file, ReleasePolicy::Keep).unwrap();
    let fixture = Oracle::open_path(&fixture_dir("base").join("image_prompt.safetensors"));
    let image = fixture_image(&fixture);
    let options = GenerateOptions {
        steps: 1,
        guidance: 1.0,
        seed: 0,
        sampler: SamplerKind::Euler,
        dense: false,
        device_budget: None,
    };
    // Ids without the image's placeholder.
    let err = generator
        .generate_with_image(&[1, 2, 3], Some(&image), &[], &options, &mut Quiet)
        .err()
        .unwrap();
    assert!(err.to_string().contains("0 image placeholders"), "{err}");
    // Prefill with a pad run that does not match the image.
    let encoded = generator.encode_image(&image).unwrap();
    let short = vec![encoded.token_id; encoded.tokens() - 1];
    let err = prefill(
        generator.text(),
        generator.replica(),
        &short,
        Some(&encoded),
        &mut TextScratch::new(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("consecutive image tokens"),
        "{err}"
    );
    // The context check counts the prompt's image tokens: text that fits alone does not fit with
    // the image's pads expanded.
    let context = generator.text().config().context_length;
    let generated = generator.replica().config().image_tokens();
    let text_len = context - generated - encoded.tokens() + 2;
    let mut ids = vec![1u32; text_len];
    ids[0] = encoded.token_id;
    assert!(ids.len() + generated <= context);
    let err = generator
        .generate_with_image(&ids, Some(&image), &[], &options, &mut Quiet)
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(
        message.contains("too long")
            && message.contains(&format!("{} of them image", encoded.tokens())),
        "{message}"
    );
}
