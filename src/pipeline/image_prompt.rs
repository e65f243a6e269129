//! The image part of a prompt, shared by understanding (`describe`) and generation
//! (`prompt_context`), as transformers' Qwen2-VL builds it: the image goes through the processor and
//! the vision tower (`PromptImage::encode`); the chat template's single `<|image_pad|>` is expanded
//! to one pad per merged image token (`expand_image_pad`); the tower's embeddings replace the pads'
//! token embeddings and every token gets its M-RoPE position (`embed_prompt`).
//!
//! This module owns that splice; it must not render templates, tokenize or run the text decoder.

use thiserror::Error;

use crate::backend::Backend;
use crate::image::{preprocess, ImageInputError, RgbImage};
use crate::model::positions::{rope_positions, MergedGrid};
use crate::model::text::TextModel;
use crate::model::vision::VisionModel;
use crate::model::ModelError;

#[derive(Debug, Error)]
pub enum ImagePromptError {
    #[error(transparent)]
    Image(#[from] ImageInputError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the prompt holds {found} image placeholders for 1 image")]
    Placeholders { found: usize },
}

/// One image as the prompt needs it: the vision tower's embeddings, one row per merged token.
pub struct PromptImage {
    /// `[tokens, D]`, D the text decoder's width.
    pub embeddings: Vec<f32>,
    /// `[frames, rows, cols]` in merged tokens (for M-RoPE).
    pub merged_grid: MergedGrid,
    /// The `<|image_pad|>` id whose run the embeddings replace.
    pub token_id: u32,
}

impl PromptImage {
    /// Preprocesses `image` (Qwen2-VL's processor) and runs the vision tower.
    pub fn encode<B: Backend>(
        tower: &VisionModel<'_, B>,
        image: &RgbImage,
    ) -> Result<Self, ImagePromptError> {
        let pixels = preprocess(image, &tower.config().preprocess)?;
        let output = tower.encode(&pixels)?;
        Ok(PromptImage {
            embeddings: output.embeddings,
            merged_grid: output.merged_grid,
            token_id: tower.config().image_token_id,
        })
    }

    /// Merged image tokens (pads in the prompt).
    pub fn tokens(&self) -> usize {
        self.merged_grid.iter().product()
    }
}

/// `template_ids` with its one `image_token` repeated `copies` times (the template writes one pad
/// per image; the model reads one per merged token).
pub fn expand_image_pad(
    template_ids: &[u32],
    image_token: u32,
    copies: usize,
) -> Result<Vec<u32>, ImagePromptError> {
    let found = template_ids.iter().filter(|&&t| t == image_token).count();
    if found != 1 {
        return Err(ImagePromptError::Placeholders { found });
    }
    let mut ids = Vec::with_capacity(template_ids.len() + copies);
    for &t in template_ids {
        let n = if t == image_token { copies } else { 1 };
        ids.extend(std::iter::repeat_n(t, n));
    }
    Ok(ids)
}

/// The prompt's input rows and positions: `ids`' token embeddings into `embeddings`
/// (`[ids.len(), D]`), with `image`'s rows in place of its pad run; returns each token's `(t, h, w)`
/// position and the next free position. Without an image every token is text (t = h = w = index).
pub fn embed_prompt<B: Backend>(
    text: &TextModel<'_, B>,
    ids: &[u32],
    image: Option<&PromptImage>,
    embeddings: &mut [f32],
) -> Result<(Vec<[u32; 3]>, u32), ModelError> {
    // Without an image no id matches u32::MAX (no vocabulary is that large), so all is text.
    let (image_token, grids) = match image {
        Some(image) => (image.token_id, vec![image.merged_grid]),
        None => (u32::MAX, Vec::new()),
    };
    // Checks that the pads form exactly the image's run.
    let (positions, next) = rope_positions(ids, image_token, &grids)?;
    text.embed_tokens(ids, embeddings)?;
    if let Some(image) = image {
        let d = text.config().hidden;
        if image.embeddings.len() != image.tokens() * d {
            return Err(ModelError::Invalid {
                file: "prompt".into(),
                what: format!(
                    "image embeddings of {} values for {} tokens of width {d}",
                    image.embeddings.len(),
                    image.tokens()
                ),
            });
        }
        let pads = ids.iter().zip(embeddings.chunks_exact_mut(d));
        let pads = pads
            .filter(|(&id, _)| id == image_token)
            .map(|(_, row)| row);
        for (row, image_row) in pads.zip(image.embeddings.chunks_exact(d)) {
            row.copy_from_slice(image_row);
        }
    }
    Ok((positions, next))
}
