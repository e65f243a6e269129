//! Times image understanding on any GGUF, tokenizer or not (e.g. `latte convert --synthetic
//! latte-flow-2b`, which has none): the vision tower on a synthetic image of `--image N`×N pixels,
//! one batched prefill of the image tokens plus `--prompt` seeded random text tokens, then
//! `--tokens` greedy decode steps through the KV cache. Prints the seconds of each stage and the
//! prompt / decode speeds, as `latte describe` reports them.
//!
//!     cargo run --release --example understand_speed -- model.gguf [--image 224] [--prompt 64] [--tokens 32]

use std::time::Instant;

use latte::image::{preprocess, RgbImage};
use latte::model::positions::rope_positions;
use latte::model::text::{KvCache, Logits, TextModel, TextScratch};
use latte::model::vision::{VisionConfig, VisionModel};
use latte::model::ModelFile;
use latte::rng::SplitMix64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: understand_speed MODEL.gguf [--image N] [--prompt N] [--tokens N]")?;
    let option = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let (side, prompt, tokens) = (
        option("--image", 224)?,
        option("--prompt", 64)?,
        option("--tokens", 32)?,
    );

    let started = Instant::now();
    let file = ModelFile::open(path)?;
    let text = TextModel::load(&file)?;
    let vision = if VisionConfig::present(&file) && side > 0 {
        Some(VisionModel::load(&file)?)
    } else {
        None
    };
    println!("load: {:.3} s", started.elapsed().as_secs_f64());
    let config = text.config().clone();

    // Image tokens first, then random text tokens (ids below the vocabulary).
    let mut ids = Vec::new();
    let mut grids = Vec::new();
    let mut image_embeddings = Vec::new();
    let image_token = vision
        .as_ref()
        .map_or(u32::MAX, |v| v.config().image_token_id);
    if let Some(vision) = &vision {
        let pixels: Vec<u8> = (0..side * side * 3)
            .map(|i| ((i * 7 + i / (side * 3) * 13) % 256) as u8)
            .collect();
        let image = RgbImage::new(side, side, pixels)?;
        let started = Instant::now();
        let values = preprocess(&image, &vision.config().preprocess)?;
        let output = vision.encode(&values)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "vision: {}x{} px → {} patches → {} tokens in {seconds:.3} s",
            values.resized_width,
            values.resized_height,
            values.grid.iter().product::<usize>(),
            output.n_tokens()
        );
        ids.extend(std::iter::repeat_n(image_token, output.n_tokens()));
        grids.push(output.merged_grid);
        image_embeddings = output.embeddings;
    }
    let mut rng = SplitMix64::new(7);
    let text_ids = (0..prompt).map(|_| (rng.next_u64() % 1000) as u32 + 10);
    ids.extend(text_ids.filter(|&t| t != image_token));
    let (positions, mut next) = rope_positions(&ids, image_token, &grids)?;

    let d = config.hidden;
    let mut embeddings = vec![0f32; ids.len() * d];
    text.embed_tokens(&ids, &mut embeddings)?;
    embeddings[..image_embeddings.len()].copy_from_slice(&image_embeddings);
    let capacity = ids.len() + tokens;
    let mut cache = KvCache::new(&config, capacity);
    let mut scratch = TextScratch::with_capacity(&config, ids.len(), capacity);
    let mut logits = Vec::with_capacity(config.vocab);
    let started = Instant::now();
    text.forward(
        &embeddings,
        &positions,
        &mut cache,
        &mut scratch,
        None,
        Logits::Last,
        &mut logits,
    )?;
    let prefill = started.elapsed().as_secs_f64();
    println!(
        "prefill: {} tokens in {prefill:.3} s = {:.1} tok/s",
        ids.len(),
        ids.len() as f64 / prefill
    );

    let mut row = vec![0f32; d];
    let started = Instant::now();
    for _ in 0..tokens {
        let token = logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32;
        text.embed_tokens(&[token], &mut row)?;
        text.forward(
            &row,
            &[[next; 3]],
            &mut cache,
            &mut scratch,
            None,
            Logits::Last,
            &mut logits,
        )?;
        next += 1;
    }
    let decode = started.elapsed().as_secs_f64();
    println!(
        "decode: {tokens} tokens in {decode:.3} s = {:.2} tok/s",
        tokens as f64 / decode.max(1e-9)
    );
    Ok(())
}
