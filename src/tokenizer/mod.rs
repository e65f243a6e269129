//! Text ↔ token ids for the Qwen2-VL inside a LaTtE-Flow file: the byte-level BPE that llama.cpp's
//! `tokenizer.ggml.*` keys describe (`model = gpt2`, `pre = gpt-2 | qwen2`), NFC normalization when
//! `latte.tokenizer.normalizer` asks for it (latte's files always say; in another converter's,
//! such as llama.cpp's, the family implies it: NFC for Qwen2's, as its `tokenizer.json` has),
//! added tokens matched literally before BPE, streaming detokenization, and the chat template
//! (`chat_template.rs`).
//!
//! Owns vocabulary, merges, pre-tokenization and special-token handling. Must not know about
//! models or sampling: it reads keys from a [`ModelFile`] and never touches tensors.
//!
//! Checked against HF `tokenizers` and transformers' `apply_chat_template` (fixtures written by
//! `tools/make_tokenizer_fixtures.py`).

mod bpe;
pub mod byte_level;
pub mod chat_template;
mod decoder;
mod error;
mod pre_tokenizer;
mod special;

use std::borrow::Cow;
use std::collections::HashMap;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

pub use chat_template::{ChatMessage, ChatTemplate, ContentPart, MessageContent};
pub use decoder::TokenDecoder;
pub use error::TokenizerError;
pub use pre_tokenizer::{Pieces, PreTokenizer};

use crate::model::ModelFile;
use bpe::{BpeScratch, Merges};
use special::{Segment, SpecialTokens};

/// The longest text [`Tokenizer::encode`] takes at once (prompts are far shorter; the cap bounds
/// the scratch a hostile input can demand).
pub const MAX_INPUT_BYTES: usize = 4 << 20;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A BPE token (byte-level text).
    Normal,
    Unknown,
    /// A special token (`<|im_end|>`): matched in text only when specials are parsed.
    Control,
    /// An added token that is not special: always matched in text.
    UserDefined,
    /// Padding up to the embedding rows (`[PAD{id}]`): never produced, decodes to nothing.
    Unused,
    Byte,
}

impl TokenKind {
    fn from_type(id: u32, token_type: i64) -> Result<TokenKind, TokenizerError> {
        Ok(match token_type {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return Err(TokenizerError::UnknownTokenType { id, token_type }),
        })
    }
}

/// How text is normalized before pre-tokenization (`tokenizer.json`'s `normalizer`, recorded by
/// `latte convert` as `latte.tokenizer.normalizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalizer {
    #[default]
    None,
    /// Unicode canonical composition (Qwen2's): `e` + U+0301 encodes as `é`.
    Nfc,
}

impl Normalizer {
    /// What a tokenizer family's `tokenizer.json` carries, for files that do not say: Qwen2's
    /// (Qwen2, Qwen2-VL, Qwen2.5 and Qwen3 ship the same) has an NFC normalizer; GPT-2's none.
    pub fn implied_by(pre_tokenizer: PreTokenizer) -> Normalizer {
        match pre_tokenizer {
            PreTokenizer::Qwen2 => Normalizer::Nfc,
            PreTokenizer::Gpt2 => Normalizer::None,
        }
    }

    pub fn from_name(name: &str) -> Option<Normalizer> {
        match name {
            "none" => Some(Normalizer::None),
            "nfc" => Some(Normalizer::Nfc),
            _ => None,
        }
    }

    /// `text` normalized, borrowed when it already is.
    fn apply<'a>(self, text: &'a str) -> Cow<'a, str> {
        match self {
            Normalizer::Nfc if is_nfc_quick(text.chars()) != IsNormalized::Yes => {
                Cow::Owned(text.nfc().collect())
            }
            _ => Cow::Borrowed(text),
        }
    }
}

/// What a tokenizer is built from: the `tokenizer.ggml.*` keys, already read.
#[derive(Debug, Clone)]
pub struct TokenizerParts {
    pub tokens: Vec<String>,
    /// llama.cpp token types, one per token; empty means all normal.
    pub token_types: Vec<i64>,
    /// `"left right"`, by rank.
    pub merges: Vec<String>,
    pub pre_tokenizer: PreTokenizer,
    pub normalizer: Normalizer,
    pub bos_id: Option<u64>,
    pub eos_id: Option<u64>,
    pub eot_id: Option<u64>,
    pub padding_id: Option<u64>,
    /// `tokenizer.ggml.unknown_token_id`: what a byte without a token becomes (HF's `unk_token`);
    /// without one such a byte is dropped, as HF `tokenizers` drops it.
    pub unknown_id: Option<u64>,
}

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, u32>,
    /// The bytes each token decodes to: `piece_bytes[piece_offsets[id]..piece_offsets[id + 1]]`.
    piece_bytes: Vec<u8>,
    piece_offsets: Vec<usize>,
    /// The BPE token of each byte (its byte-level character), if the vocabulary has it.
    byte_ids: [Option<u32>; 256],
    merges: Merges,
    pre_tokenizer: PreTokenizer,
    normalizer: Normalizer,
    special: SpecialTokens,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    eot_id: Option<u32>,
    padding_id: Option<u32>,
    unknown_id: Option<u32>,
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes (`tokenizer.ggml.model` must be `gpt2`).
    pub fn from_model_file(file: &ModelFile) -> Result<Tokenizer, TokenizerError> {
        let model = file.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        // A missing `pre` means llama.cpp's `default` regex, which latte does not implement.
        let name = match file.get("tokenizer.ggml.pre") {
            None => "default (tokenizer.ggml.pre is missing)",
            Some(_) => file.str("tokenizer.ggml.pre")?,
        };
        let pre_tokenizer = PreTokenizer::from_name(name)
            .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(name.to_string()))?;
        let normalizer = match file.get("latte.tokenizer.normalizer") {
            // Another converter's file (llama.cpp keeps no normalizer): the family's own.
            None => Normalizer::implied_by(pre_tokenizer),
            Some(_) => {
                let name = file.str("latte.tokenizer.normalizer")?;
                Normalizer::from_name(name)
                    .ok_or_else(|| TokenizerError::UnsupportedNormalizer(name.to_string()))?
            }
        };
        let token_types = match file.get("tokenizer.ggml.token_type") {
            None => Vec::new(),
            Some(_) => file.i64_array("tokenizer.ggml.token_type")?,
        };
        let id = |key: &str| -> Result<Option<u64>, TokenizerError> {
            match file.get(key) {
                None => Ok(None),
                Some(_) => Ok(Some(file.usize(key)? as u64)),
            }
        };
        Tokenizer::from_parts(TokenizerParts {
            tokens: file.str_array("tokenizer.ggml.tokens")?.to_vec(),
            token_types,
            merges: file.str_array("tokenizer.ggml.merges")?.to_vec(),
            pre_tokenizer,
            normalizer,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            eot_id: id("tokenizer.ggml.eot_token_id")?,
            padding_id: id("tokenizer.ggml.padding_token_id")?,
            unknown_id: id("tokenizer.ggml.unknown_token_id")?,
        })
    }

    /// A tokenizer from its parts, validated: every merge names known tokens, every normal token
    /// is byte-level text, special ids lie in the vocabulary.
    pub fn from_parts(parts: TokenizerParts) -> Result<Tokenizer, TokenizerError> {
        let TokenizerParts {
            tokens,
            token_types,
            merges,
            pre_tokenizer,
            ..
        } = &parts;
        let n = tokens.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocabulary);
        }
        if u32::try_from(n).is_err() || n == u32::MAX as usize {
            return Err(TokenizerError::VocabularyTooLarge(n));
        }
        if !token_types.is_empty() && token_types.len() != n {
            return Err(TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.token_type",
                expected: n,
                got: token_types.len(),
            });
        }
        let kinds = (0..n)
            .map(|i| match token_types.get(i) {
                Some(&t) => TokenKind::from_type(i as u32, t),
                None => Ok(TokenKind::Normal),
            })
            .collect::<Result<Vec<_>, _>>()?;

        // The first token with a text wins (as llama.cpp's map does); BPE sees only BPE tokens.
        let mut ids = HashMap::with_capacity(n);
        let mut bpe_ids = HashMap::with_capacity(n);
        for (i, (text, kind)) in tokens.iter().zip(&kinds).enumerate() {
            ids.entry(text.clone()).or_insert(i as u32);
            if matches!(kind, TokenKind::Normal | TokenKind::Byte) {
                bpe_ids.entry(text.as_str()).or_insert(i as u32);
            }
        }

        let mut piece_bytes = Vec::new();
        let mut piece_offsets = Vec::with_capacity(n + 1);
        piece_offsets.push(0);
        for (i, (text, kind)) in tokens.iter().zip(&kinds).enumerate() {
            match kind {
                TokenKind::Normal | TokenKind::Byte => {
                    if !byte_level::decode_str(text, &mut piece_bytes) {
                        return Err(TokenizerError::NotByteLevel {
                            id: i as u32,
                            text: text.clone(),
                        });
                    }
                }
                TokenKind::Unused => {}
                // HF's byte-level decoder maps an added token's characters when all are in the
                // alphabet, and passes its UTF-8 through otherwise.
                _ => {
                    if !byte_level::decode_str(text, &mut piece_bytes) {
                        piece_bytes.extend_from_slice(text.as_bytes());
                    }
                }
            }
            piece_offsets.push(piece_bytes.len());
        }

        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            *slot = bpe_ids
                .get(byte_level::byte_to_char(b as u8).encode_utf8(&mut buf) as &str)
                .copied();
        }
        let merges = Merges::new(merges, |t| bpe_ids.get(t).copied())?;

        let added: Vec<(&str, u32, bool)> = tokens
            .iter()
            .zip(&kinds)
            .enumerate()
            .filter_map(|(i, (text, kind))| match kind {
                TokenKind::Control => Some((text.as_str(), i as u32, true)),
                TokenKind::UserDefined => Some((text.as_str(), i as u32, false)),
                _ => None,
            })
            .collect();
        let special = SpecialTokens::new(&added)?;

        let check = |key: &'static str, id: Option<u64>| -> Result<Option<u32>, TokenizerError> {
            match id {
                None => Ok(None),
                Some(id) if id < n as u64 => Ok(Some(id as u32)),
                Some(id) => Err(TokenizerError::SpecialIdOutOfRange {
                    key,
                    id,
                    vocab_size: n,
                }),
            }
        };
        let bos_id = check("tokenizer.ggml.bos_token_id", parts.bos_id)?;
        let eos_id = check("tokenizer.ggml.eos_token_id", parts.eos_id)?;
        let eot_id = check("tokenizer.ggml.eot_token_id", parts.eot_id)?;
        let padding_id = check("tokenizer.ggml.padding_token_id", parts.padding_id)?;
        let unknown_id = check("tokenizer.ggml.unknown_token_id", parts.unknown_id)?;
        let pre_tokenizer = *pre_tokenizer;
        let normalizer = parts.normalizer;
        Ok(Tokenizer {
            tokens: parts.tokens,
            kinds,
            ids,
            piece_bytes,
            piece_offsets,
            byte_ids,
            merges,
            pre_tokenizer,
            normalizer,
            special,
            bos_id,
            eos_id,
            eot_id,
            padding_id,
            unknown_id,
        })
    }

    /// The ids of `text`. With `parse_special`, control tokens written in the text (`<|im_end|>`)
    /// become their ids; without, they are encoded as plain text. No BOS is added. The text
    /// between added tokens is normalized first (added tokens match the raw text, as in HF).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        if text.len() > MAX_INPUT_BYTES {
            return Err(TokenizerError::InputTooLong {
                len: text.len(),
                max: MAX_INPUT_BYTES,
            });
        }
        let mut segments = Vec::new();
        self.special.split(text, parse_special, &mut segments);
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut byte_ids = Vec::new();
        let mut scratch = BpeScratch::default();
        for segment in segments {
            match segment {
                Segment::Token(id) => out.push(id),
                Segment::Text(text) => {
                    let text = self.normalizer.apply(text);
                    for piece in self.pre_tokenizer.pieces(&text) {
                        byte_ids.clear();
                        // A byte without a token: the unknown token, or nothing (its neighbours
                        // then merge across it), as HF `tokenizers`' BPE does.
                        byte_ids.extend(
                            piece
                                .bytes()
                                .filter_map(|b| self.byte_ids[b as usize].or(self.unknown_id)),
                        );
                        self.merges.encode(&byte_ids, &mut scratch, &mut out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The text of `ids`, special tokens included. Invalid UTF-8 becomes U+FFFD; ids outside the
    /// vocabulary and padding tokens add nothing (as HF `tokenizers` skips unknown ids).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.decode_with(ids, false)
    }

    /// The text of `ids` without the control tokens.
    pub fn decode_skipping_special(&self, ids: &[u32]) -> String {
        self.decode_with(ids, true)
    }

    fn decode_with(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(b) = self.token_bytes(id, skip_special) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming decoder: ids one by one in, complete UTF-8 pieces out.
    pub fn stream_decoder(&self, skip_special: bool) -> TokenDecoder<'_> {
        TokenDecoder::new(self, skip_special)
    }

    /// The bytes `id` decodes to, `None` if it is out of range or a skipped special.
    fn token_bytes(&self, id: u32, skip_special: bool) -> Option<&[u8]> {
        let i = id as usize;
        let kind = *self.kinds.get(i)?;
        if skip_special && kind == TokenKind::Control {
            return None;
        }
        let (start, end) = (*self.piece_offsets.get(i)?, *self.piece_offsets.get(i + 1)?);
        self.piece_bytes.get(start..end)
    }

    /// The bytes token `id` stands for (`None` outside the vocabulary); a byte-level token may be
    /// part of a character.
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes(id, false)
    }

    /// The bytes that have no token of their own: prompts lose them (or get the unknown token in
    /// their place). A complete byte-level vocabulary has none; callers may warn once.
    pub fn missing_bytes(&self) -> Vec<u8> {
        (0..=255u8)
            .filter(|&b| self.byte_ids[b as usize].is_none())
            .collect()
    }

    /// What a byte without a token becomes, if the vocabulary has an unknown token.
    pub fn unknown_id(&self) -> Option<u32> {
        self.unknown_id
    }

    /// The id of a token written as the vocabulary writes it (`<|im_end|>`, `Ġthe`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The vocabulary's text for `id`.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Whether `id` is a control token (`<|im_start|>`, `<|image_pad|>`, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.kind(id) == Some(TokenKind::Control)
    }

    /// The number of tokens, padding included (equals the embedding's rows in a converted file).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre_tokenizer
    }

    pub fn normalizer(&self) -> Normalizer {
        self.normalizer
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The end-of-turn token if the file names one, else the end-of-sequence token.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id.or(self.eos_id)
    }

    pub fn padding_id(&self) -> Option<u32> {
        self.padding_id
    }

    /// Whether generation stops at `id` (end of sequence or end of turn).
    pub fn is_stop(&self, id: u32) -> bool {
        Some(id) == self.eos_id || Some(id) == self.eot_id
    }
}
