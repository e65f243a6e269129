//! Streaming detokenization: ids in one at a time, complete UTF-8 text out. A token may end in the
//! middle of a multi-byte character (byte-level BPE splits emoji and CJK across tokens), so the
//! trailing bytes of an unfinished character are held back until the next token completes them.
//! Invalid bytes become U+FFFD exactly where `String::from_utf8_lossy` of the whole sequence would
//! put them, so the pieces concatenate to `Tokenizer::decode`.

use super::Tokenizer;

/// Turns ids into text pieces; reuses its buffers, so steady-state decoding does not allocate.
pub struct TokenDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    /// Bytes of an unfinished character (at most 3).
    pending: Vec<u8>,
    /// The piece returned by the last call.
    text: String,
}

impl<'a> TokenDecoder<'a> {
    pub(super) fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        TokenDecoder {
            tokenizer,
            skip_special,
            pending: Vec::with_capacity(64),
            text: String::with_capacity(64),
        }
    }

    /// The complete text `id` adds (possibly empty while a character is unfinished). Ids outside
    /// the vocabulary add nothing, as in `decode`.
    pub fn push(&mut self, id: u32) -> &str {
        self.text.clear();
        if let Some(bytes) = self.tokenizer.token_bytes(id, self.skip_special) {
            self.pending.extend_from_slice(bytes);
        }
        let mut at = 0;
        loop {
            match std::str::from_utf8(&self.pending[at..]) {
                Ok(s) => {
                    self.text.push_str(s);
                    at = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid` bytes were just checked to be UTF-8.
                    let s = std::str::from_utf8(&self.pending[at..at + valid]).unwrap_or_default();
                    self.text.push_str(s);
                    at += valid;
                    match e.error_len() {
                        Some(len) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            at += len;
                        }
                        // An unfinished character at the end: keep it for the next token.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..at);
        &self.text
    }

    /// Whatever is still held back (an unfinished character at the end becomes one U+FFFD).
    pub fn finish(&mut self) -> &str {
        self.text.clear();
        if !self.pending.is_empty() {
            self.text.push(char::REPLACEMENT_CHARACTER);
            self.pending.clear();
        }
        &self.text
    }
}
