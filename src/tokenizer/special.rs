//! Finding added tokens (`<|im_end|>`, `<|image_pad|>`, ...) in text before BPE sees it: literal
//! matches, leftmost-longest as HF `tokenizers`' added vocabulary does, in one linear pass
//! (Aho-Corasick). Control tokens are matched only when the caller parses specials; user-defined
//! tokens always are (HF's `encode_special_tokens` and llama.cpp's `parse_special` both work so).

use aho_corasick::{AhoCorasick, MatchKind};

use super::error::TokenizerError;

/// A piece of text: either plain text for the pre-tokenizer, or an added token's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    Text(&'a str),
    Token(u32),
}

/// One matcher over a set of added tokens.
struct Matcher {
    automaton: Option<AhoCorasick>,
    ids: Vec<u32>,
}

impl Matcher {
    fn new(tokens: Vec<(&str, u32)>) -> Result<Matcher, TokenizerError> {
        // An empty token would match everywhere; it can never be meant literally.
        let tokens: Vec<(&str, u32)> = tokens.into_iter().filter(|(t, _)| !t.is_empty()).collect();
        if tokens.is_empty() {
            return Ok(Matcher {
                automaton: None,
                ids: Vec::new(),
            });
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(tokens.iter().map(|(t, _)| t))
            .map_err(|e| TokenizerError::AddedTokens(e.to_string()))?;
        Ok(Matcher {
            automaton: Some(automaton),
            ids: tokens.iter().map(|&(_, id)| id).collect(),
        })
    }
}

/// The added tokens of a vocabulary, ready to split text on.
pub struct SpecialTokens {
    /// Control and user-defined tokens (specials parsed).
    all: Matcher,
    /// User-defined tokens only (specials as plain text).
    user_defined: Matcher,
}

impl SpecialTokens {
    /// `tokens` are (text, id, is_control) for every added token.
    pub fn new(tokens: &[(&str, u32, bool)]) -> Result<SpecialTokens, TokenizerError> {
        Ok(SpecialTokens {
            all: Matcher::new(tokens.iter().map(|&(t, id, _)| (t, id)).collect())?,
            user_defined: Matcher::new(
                tokens
                    .iter()
                    .filter(|&&(_, _, control)| !control)
                    .map(|&(t, id, _)| (t, id))
                    .collect(),
            )?,
        })
    }

    /// Splits `text` into plain text and added tokens, in order, appending to `out`.
    pub fn split<'a>(&self, text: &'a str, parse_special: bool, out: &mut Vec<Segment<'a>>) {
        let matcher = if parse_special {
            &self.all
        } else {
            &self.user_defined
        };
        let Some(automaton) = &matcher.automaton else {
            if !text.is_empty() {
                out.push(Segment::Text(text));
            }
            return;
        };
        let mut at = 0;
        for m in automaton.find_iter(text) {
            if m.start() > at {
                out.push(Segment::Text(&text[at..m.start()]));
            }
            out.push(Segment::Token(matcher.ids[m.pattern().as_usize()]));
            at = m.end();
        }
        if at < text.len() {
            out.push(Segment::Text(&text[at..]));
        }
    }
}
