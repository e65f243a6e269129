//! Times the vision tower on any GGUF, tokenizer or not (e.g. `latte convert --synthetic
//! latte-flow-2b`, which has none): load, then preprocessing and encoding of a synthetic image of
//! `--image N`×N pixels. Prompt and decode speeds are `latte bench --tests pp512,tg128`'s job.
//!
//!     cargo run --release --example vision_speed -- model.gguf [--image 224]

use std::time::Instant;

use latte::image::{preprocess, RgbImage};
use latte::model::vision::{VisionConfig, VisionModel};
use latte::model::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: vision_speed MODEL.gguf [--image N]")?;
    let option = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    let side = option("--image", 224)?;

    let started = Instant::now();
    let file = ModelFile::open(path)?;
    if !VisionConfig::present(&file) {
        return Err(format!("{path}: the file has no vision tower").into());
    }
    let vision = VisionModel::load(&file)?;
    println!("load: {:.3} s", started.elapsed().as_secs_f64());

    let pixels: Vec<u8> = (0..side * side * 3)
        .map(|i| ((i * 7 + i / (side * 3) * 13) % 256) as u8)
        .collect();
    let image = RgbImage::new(side, side, pixels)?;
    let started = Instant::now();
    let values = preprocess(&image, &vision.config().preprocess)?;
    let output = vision.encode(&values)?;
    println!(
        "vision: {}x{} px → {} patches → {} tokens in {:.3} s",
        values.resized_width,
        values.resized_height,
        values.grid.iter().product::<usize>(),
        output.n_tokens(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
