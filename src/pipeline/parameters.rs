//! What a generated image records about how it was made: the PNG text chunks `latte generate`
//! and `latte serve` both write, so that a file can be regenerated from its own metadata.
//!
//! This module owns the names and the formatting of those values, and the PNG bytes that carry
//! them; it must not write files.

use crate::image::png::{encode_png, ImageError};

use super::generate::GenerateOptions;
use super::SamplerKind;

/// The parameters of one generated image.
pub struct ImageParameters<'a> {
    /// The prompt as the user gave it (or `ids [...]` for token-id prompts).
    pub prompt: &'a str,
    pub negative_prompt: Option<&'a str>,
    pub seed: u64,
    pub options: &'a GenerateOptions,
    /// The model as the user named it (a path, or "demo (embedded)").
    pub model: &'a str,
    /// The file name of the prompt's image, if it had one.
    pub image: Option<&'a str>,
}

impl SamplerKind {
    /// The name the command line and the server take (`--sampler euler`).
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
        }
    }
}

impl ImageParameters<'_> {
    /// `(key, value)` pairs in the order they are written.
    pub fn text_chunks(&self) -> Vec<(&'static str, String)> {
        let mut text = vec![
            ("prompt", self.prompt.to_string()),
            ("seed", self.seed.to_string()),
            ("steps", self.options.steps.to_string()),
            ("guidance", self.options.guidance.to_string()),
            ("sampler", self.options.sampler.name().to_string()),
            ("model", self.model.to_string()),
            ("Software", "latte".to_string()),
        ];
        if let Some(negative) = self.negative_prompt {
            text.push(("negative_prompt", negative.to_string()));
        }
        if let Some(name) = self.image {
            text.push(("image", name.to_string()));
        }
        if self.options.dense {
            text.push(("dense", "true".to_string()));
        }
        text
    }

    /// `image` (`[3, H, W]` in `[−1, 1]`) as PNG bytes carrying these parameters.
    pub fn encode_png(
        &self,
        image: &[f32],
        height: usize,
        width: usize,
    ) -> Result<Vec<u8>, ImageError> {
        let text = self.text_chunks();
        let text: Vec<(&str, &str)> = text.iter().map(|(k, v)| (*k, v.as_str())).collect();
        encode_png(image, height, width, &text)
    }
}
