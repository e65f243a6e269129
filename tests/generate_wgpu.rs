//! The embedded demo model generates and describes on the wgpu backend as it does on the CPU: the
//! same seed gives the same image within ±2/255 (the noise is drawn on the host; the kernels differ
//! from the CPU's only in summation order), for several prompts, seeds, both samplers and dense
//! sampling; greedy answers are identical. In CI this runs on lavapipe (software Vulkan); without
//! an adapter it is skipped unless `LATTE_REQUIRE_GPU=1`.
#![cfg(feature = "wgpu")]

use std::ops::ControlFlow;
mod common;

use common::gpu::gpu;
use latte::backend::Backend;
use latte::image::{to_rgb8, RgbImage};
use latte::model::ModelFile;
use latte::pipeline::generate::{GenerateOptions, Generator, Quiet};
use latte::pipeline::{DescribeRequest, Describer, SamplerKind};
use latte::residency::ReleasePolicy;
use latte::sampling::SamplingParams;
use latte::tokenizer::Tokenizer;

/// A backend's expert-group slots serve one sampling run at a time: these tests share one GPU.
static ONE_RUN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn demo() -> ModelFile {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo-f16.gguf");
    ModelFile::open(path).unwrap()
}

fn image_on<B: Backend>(
    backend: &B,
    file: &ModelFile,
    prompt: &str,
    options: &GenerateOptions,
) -> (Vec<u8>, usize) {
    let generator = Generator::load_on(backend, file, ReleasePolicy::Keep).unwrap();
    let config = generator.replica().config();
    let tokenizer = Tokenizer::from_model_file(file).unwrap();
    let cond = tokenizer.encode(&config.prompt_text(prompt), true).unwrap();
    let uncond = tokenizer.encode(&config.prompt_text(""), true).unwrap();
    let out = generator
        .generate(&cond, &uncond, options, &mut Quiet)
        .unwrap();
    (
        to_rgb8(&out.image, out.height, out.width).unwrap(),
        out.group_uploads,
    )
}

#[test]
fn demo_images_match_the_cpu_within_two_levels() {
    let Some(gpu) = gpu() else { return };
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let file = demo();
    let config = Generator::load(&file, ReleasePolicy::Keep)
        .unwrap()
        .replica()
        .config()
        .clone();
    let cases = [
        ("a red circle", 0, SamplerKind::Euler, false, 40),
        ("a blue star on the left", 7, SamplerKind::Euler, false, 40),
        ("a green triangle", 3, SamplerKind::Heun, false, 12),
        (
            "a yellow square on the right",
            11,
            SamplerKind::Euler,
            true,
            12,
        ),
    ];
    for (prompt, seed, sampler, dense, steps) in cases {
        let options = GenerateOptions {
            steps,
            guidance: config.guidance_scale,
            seed,
            sampler,
            dense,
            device_budget: None,
        };
        let (want, cpu_uploads) = image_on(&latte::backend::cpu::CPU, &file, prompt, &options);
        let (got, uploads) = image_on(gpu, &file, prompt, &options);
        assert_eq!(cpu_uploads, 0);
        // Two slots: each group once (dense: every group before sampling).
        assert_eq!(uploads, config.group_count, "{prompt}");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        println!("{prompt} seed {seed} {sampler:?} dense {dense}: max {worst}/255, {differ} of {} bytes differ", got.len());
        assert!(worst <= 2, "{prompt}: a byte differs by {worst}/255");
    }
}

#[test]
fn measured_device_memory_stays_within_the_plan() {
    let Some(gpu) = gpu() else { return };
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let file = demo();
    let generator = Generator::load_on(gpu, &file, ReleasePolicy::Keep).unwrap();
    let config = generator.replica().config();
    let tokenizer = Tokenizer::from_model_file(&file).unwrap();
    let cond = tokenizer
        .encode(&config.prompt_text("a red circle"), true)
        .unwrap();
    let uncond = tokenizer.encode(&config.prompt_text(""), true).unwrap();
    let options = GenerateOptions {
        steps: 8,
        guidance: config.guidance_scale,
        seed: 1,
        sampler: SamplerKind::Euler,
        dense: false,
        device_budget: None,
    };
    let plan = generator
        .device_plan(&options, cond.len())
        .unwrap()
        .unwrap();
    let out = generator
        .generate(&cond, &uncond, &options, &mut Quiet)
        .unwrap();
    assert_eq!(plan.phases.len(), out.phases.len());
    for (predicted, measured) in plan.phases.iter().zip(&out.phases) {
        let peak = measured.device_peak.unwrap();
        println!(
            "{}: predicted {} measured {peak}",
            measured.name, predicted.1
        );
        assert!(
            peak <= predicted.1,
            "{}: measured {peak} bytes > predicted {}",
            measured.name,
            predicted.1
        );
    }
    // The groups leave the device before the decoder comes.
    let sampling = out.phases[1].device_peak.unwrap();
    assert!(out.phases.last().unwrap().device_peak.unwrap() < sampling);
}

#[test]
fn one_slot_switches_synchronously_and_gives_the_same_image() {
    let Some(gpu) = gpu() else { return };
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let file = demo();
    let generator = Generator::load_on(gpu, &file, ReleasePolicy::Keep).unwrap();
    let config = generator.replica().config().clone();
    let mut options = GenerateOptions {
        steps: 8,
        guidance: config.guidance_scale,
        seed: 5,
        sampler: SamplerKind::Heun,
        dense: false,
        device_budget: None,
    };
    let (two_slots, _) = image_on(gpu, &file, "a purple star", &options);
    // A budget with room for one group slot only.
    let (plan, fixed) = generator.slot_plan(&options, 32).unwrap();
    assert_eq!(plan.slots, 2);
    options.device_budget = Some(fixed + plan.slot_bytes + plan.slot_bytes / 2);
    let (one, _) = generator.slot_plan(&options, 32).unwrap();
    assert_eq!(one.slots, 1);
    let (one_slot, uploads) = image_on(gpu, &file, "a purple star", &options);
    assert_eq!(
        one_slot, two_slots,
        "the slot count changes when, not what, is computed"
    );
    // Heun crosses each group boundary with a corrector in the next group: with one slot every
    // crossing uploads twice more (next, back, next).
    assert!(uploads >= config.group_count, "{uploads} uploads");
    // Not even one group: refused before running, with both figures.
    options.device_budget = Some(fixed / 2);
    let err = generator.slot_plan(&options, 32).unwrap_err().to_string();
    assert!(err.contains("needs") && err.contains("budget"), "{err}");
}

fn greedy<B: Backend>(describer: &Describer<'_, B>, image: &RgbImage, prompt: &str) -> Vec<u32> {
    let request = DescribeRequest::question(Some(image), prompt, 16, SamplingParams::greedy());
    let mut ids = Vec::new();
    describer
        .describe(&request, &mut |id, _| {
            ids.push(id);
            ControlFlow::Continue(())
        })
        .unwrap();
    ids
}

#[test]
fn demo_answers_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let file = demo();
    let cpu = Describer::load(&file).unwrap();
    let on_gpu = Describer::load_on(gpu, &file).unwrap();
    // A rendered shape from the demo generator's own output.
    let (pixels, _) = image_on(
        &latte::backend::cpu::CPU,
        &file,
        "a red circle",
        &GenerateOptions {
            steps: 40,
            guidance: 2.5,
            seed: 0,
            sampler: SamplerKind::Euler,
            dense: false,
            device_budget: None,
        },
    );
    let image = RgbImage::new(64, 64, pixels).unwrap();
    for prompt in [
        "What shape is it?",
        "What colour is it?",
        "Describe the image.",
    ] {
        let want = greedy(&cpu, &image, prompt);
        let got = greedy(&on_gpu, &image, prompt);
        assert_eq!(got, want, "{prompt}");
    }
}
