//! The pre-tokenizer: splits text into the pieces BPE encodes one at a time, as the split regex of
//! `tokenizer.ggml.pre` would. The regexes need a lookahead (`\s+(?!\S)`) the `regex` crate lacks,
//! so each is a hand-written scanner in the manner of llama.cpp's `unicode_regex_split_custom_*`:
//! one pass, linear in the text, no backtracking to blow up on hostile runs. Owns the character
//! classes (`\p{L}`, `\p{N}`, `\s`); knows nothing of vocabularies.

use unicode_general_category::{get_general_category, GeneralCategory};

/// Which split regex the vocabulary was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// GPT-2's (`tokenizers`' `ByteLevel` with `use_regex`):
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// Qwen2's: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Qwen2,
}

impl PreTokenizer {
    /// The pre-tokenizer `tokenizer.ggml.pre` names (llama.cpp's names), if latte implements it.
    /// llama.cpp's `default` (what it assumes when the key is missing) is a different regex from
    /// GPT-2's, so it is not accepted.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "gpt-2" => Some(PreTokenizer::Gpt2),
            "qwen2" => Some(PreTokenizer::Qwen2),
            _ => None,
        }
    }

    /// `text`'s pieces, in order (they tile the text). Lazy and allocation-free, so a huge input
    /// costs no memory beyond what the caller keeps.
    pub fn pieces(self, text: &str) -> Pieces<'_> {
        Pieces {
            pre_tokenizer: self,
            text: Text(text),
            at: 0,
        }
    }
}

/// The iterator [`PreTokenizer::pieces`] returns.
pub struct Pieces<'a> {
    pre_tokenizer: PreTokenizer,
    text: Text<'a>,
    at: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let start = self.at;
        if start >= self.text.0.len() {
            return None;
        }
        let end = match self.pre_tokenizer {
            PreTokenizer::Gpt2 => gpt2_piece(&self.text, start),
            PreTokenizer::Qwen2 => qwen2_piece(&self.text, start),
        };
        // Every scanner consumes at least one character; guard anyway so a bug cannot hang.
        let end = if end > start {
            end
        } else {
            self.text.after(start)
        };
        self.at = end;
        self.text.0.get(start..end)
    }
}

/// The character classes the regexes use.
#[derive(Clone, Copy)]
struct Class {
    letter: bool,
    number: bool,
    whitespace: bool,
}

/// The text being split; positions are byte offsets of character starts.
struct Text<'a>(&'a str);

impl Text<'_> {
    /// The character at `pos`, `None` at the end.
    fn char(&self, pos: usize) -> Option<char> {
        self.0.get(pos..).and_then(|rest| rest.chars().next())
    }

    /// The position after the character at `pos` (`pos` itself at the end).
    fn after(&self, pos: usize) -> usize {
        self.char(pos).map_or(pos, |c| pos + c.len_utf8())
    }

    fn is(&self, pos: usize, test: impl Fn(Class) -> bool) -> bool {
        self.char(pos).map(classify).is_some_and(test)
    }

    fn is_letter(&self, pos: usize) -> bool {
        self.is(pos, |c| c.letter)
    }

    fn is_number(&self, pos: usize) -> bool {
        self.is(pos, |c| c.number)
    }

    fn is_newline(&self, pos: usize) -> bool {
        matches!(self.char(pos), Some('\r' | '\n'))
    }

    /// `[^\s\p{L}\p{N}]`
    fn is_other(&self, pos: usize) -> bool {
        self.is(pos, |c| !(c.letter || c.number || c.whitespace))
    }

    /// The end of the run of characters from `pos` that pass `test`.
    fn skip_while(&self, mut pos: usize, test: impl Fn(&Self, usize) -> bool) -> usize {
        while test(self, pos) {
            pos = self.after(pos);
        }
        pos
    }
}

fn classify(c: char) -> Class {
    use GeneralCategory::*;
    let letter = matches!(
        get_general_category(c),
        UppercaseLetter | LowercaseLetter | TitlecaseLetter | ModifierLetter | OtherLetter
    );
    Class {
        letter,
        // Rust's `is_numeric` is exactly Nd | Nl | No, and `is_whitespace` the White_Space
        // property, which is what `\p{N}` and `\s` mean to Oniguruma (HF `tokenizers`).
        number: c.is_numeric(),
        whitespace: c.is_whitespace(),
    }
}

/// The end of a contraction (`'s 't 're 've 'm 'll 'd`) at `pos`, if there is one.
fn contraction(text: &Text, pos: usize, fold_case: bool) -> Option<usize> {
    if text.char(pos) != Some('\'') {
        return None;
    }
    let fold = |c: char| -> char {
        match c {
            // `(?i)` in Oniguruma folds the long s to s.
            'ſ' if fold_case => 's',
            _ if fold_case => c.to_ascii_lowercase(),
            _ => c,
        }
    };
    let p1 = text.after(pos);
    let next = fold(text.char(p1)?);
    let p2 = text.after(p1);
    if matches!(next, 's' | 't' | 'm' | 'd') {
        return Some(p2);
    }
    let after = fold(text.char(p2)?);
    match (next, after) {
        ('r', 'e') | ('v', 'e') | ('l', 'l') => Some(text.after(p2)),
        _ => None,
    }
}

/// The whitespace run at `pos`.
struct WhitespaceRun {
    count: usize,
    /// Where its last character starts, and where it ends.
    last_start: usize,
    end: usize,
    /// The end of its last `\r` / `\n`, if it has one.
    newline_end: Option<usize>,
}

fn whitespace_run(text: &Text, pos: usize) -> WhitespaceRun {
    let mut run = WhitespaceRun {
        count: 0,
        last_start: pos,
        end: pos,
        newline_end: None,
    };
    while text.is(run.end, |c| c.whitespace) {
        let next = text.after(run.end);
        if text.is_newline(run.end) {
            run.newline_end = Some(next);
        }
        run.count += 1;
        run.last_start = run.end;
        run.end = next;
    }
    run
}

/// `\s+(?!\S)|\s+` for the whitespace run at `pos`: all of it at the end of the text, else all
/// but its last character (which then leads the next piece); a single one stays alone.
fn whitespace_piece(text: &Text, pos: usize, run: &WhitespaceRun) -> usize {
    if run.count > 1 && run.end < text.0.len() {
        run.last_start
    } else if run.count > 0 {
        run.end
    } else {
        text.after(pos)
    }
}

fn gpt2_piece(text: &Text, pos: usize) -> usize {
    if let Some(end) = contraction(text, pos, false) {
        return end;
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional literal space, then a run.
    let body = if text.char(pos) == Some(' ') {
        text.after(pos)
    } else {
        pos
    };
    if text.is_letter(body) {
        return text.skip_while(body, Text::is_letter);
    }
    if text.is_number(body) {
        return text.skip_while(body, Text::is_number);
    }
    if text.is_other(body) {
        return text.skip_while(body, Text::is_other);
    }
    whitespace_piece(text, pos, &whitespace_run(text, pos))
}

fn qwen2_piece(text: &Text, pos: usize) -> usize {
    if let Some(end) = contraction(text, pos, true) {
        return end;
    }
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if !text.is_newline(pos) && !text.is_number(pos) {
        if text.is_letter(pos) {
            return text.skip_while(pos, Text::is_letter);
        }
        let next = text.after(pos);
        if text.is_letter(next) {
            return text.skip_while(next, Text::is_letter);
        }
    }
    // `\p{N}`: one digit at a time.
    if text.is_number(pos) {
        return text.after(pos);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let body = if text.char(pos) == Some(' ') {
        text.after(pos)
    } else {
        pos
    };
    if text.is_other(body) {
        let end = text.skip_while(body, Text::is_other);
        return text.skip_while(end, Text::is_newline);
    }
    // `\s*[\r\n]+`: through the run's last newline.
    let run = whitespace_run(text, pos);
    if let Some(end) = run.newline_end {
        return end;
    }
    whitespace_piece(text, pos, &run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.pieces(text).collect()
    }

    #[test]
    fn lookahead_keeps_the_last_space_for_the_next_word() {
        for pre in [PreTokenizer::Gpt2, PreTokenizer::Qwen2] {
            assert_eq!(pieces(pre, "a   b"), ["a", "  ", " b"]);
            assert_eq!(pieces(pre, "a   "), ["a", "   "]);
            assert_eq!(pieces(pre, ""), Vec::<&str>::new());
        }
        assert_eq!(pieces(PreTokenizer::Gpt2, "12345"), ["12345"]);
        assert_eq!(pieces(PreTokenizer::Qwen2, "123"), ["1", "2", "3"]);
    }
}
