//! The error every tokenizer and chat-template operation returns: what is wrong, with the token,
//! merge or key at fault, so a user can tell which part of which file is broken.

use thiserror::Error;

use crate::model::ModelError;

#[derive(Debug, Error)]
pub enum TokenizerError {
    /// A missing or mistyped `tokenizer.*` key (names the file and key).
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer model '{0}' is not supported (latte reads byte-level BPE: 'gpt2')")]
    UnsupportedModel(String),
    #[error("pre-tokenizer '{0}' is not supported (latte knows 'gpt-2' and 'qwen2')")]
    UnsupportedPreTokenizer(String),
    #[error("normalizer '{0}' is not supported (latte knows 'none' and 'nfc')")]
    UnsupportedNormalizer(String),
    #[error("the vocabulary is empty")]
    EmptyVocabulary,
    #[error("the vocabulary has {0} tokens, more than u32 ids can address")]
    VocabularyTooLarge(usize),
    #[error("'{key}' has {got} entries, but the vocabulary has {expected} tokens")]
    LengthMismatch {
        key: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("token {id} has type {token_type}, which is not a llama.cpp token type (1..=6)")]
    UnknownTokenType { id: u32, token_type: i64 },
    /// A normal token whose text holds a character outside GPT-2's byte-to-unicode alphabet.
    #[error("token {id} ('{text}') is not byte-level text")]
    NotByteLevel { id: u32, text: String },
    #[error("merge {rank} ('{merge}'): {reason}")]
    InvalidMerge {
        rank: usize,
        merge: String,
        reason: &'static str,
    },
    #[error("'{key}' is {id}, beyond the vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange {
        key: &'static str,
        id: u64,
        vocab_size: usize,
    },
    #[error("input of {len} bytes is longer than the {max} bytes latte encodes at once")]
    InputTooLong { len: usize, max: usize },
    /// The added tokens cannot be matched (the automaton over them could not be built).
    #[error("added tokens: {0}")]
    AddedTokens(String),
    /// The chat template does not compile or fails while rendering.
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template renders (or captures in a block) more text than a prompt may hold.
    #[error("chat template: the rendered prompt is longer than {max} bytes, the most latte encodes at once")]
    TemplateOutputTooLong { max: usize },
}
