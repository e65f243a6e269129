//! OpenAI's `stop`: the answer ends before the first occurrence of any stop string, which is not
//! part of it. While streaming, text that could be the start of a stop string is held back until
//! the next pieces tell whether it is one.

/// Scans an answer as it grows.
pub struct StopScanner {
    stops: Vec<String>,
    /// The longest stop string's length in bytes.
    longest: usize,
    text: String,
    /// Bytes of `text` already handed out.
    sent: usize,
}

impl StopScanner {
    /// `stops` without empty strings (an empty stop would end every answer before it starts).
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopScanner {
            longest: stops.iter().map(String::len).max().unwrap_or(0),
            stops,
            text: String::new(),
            sent: 0,
        }
    }

    /// Adds a piece; returns the text now safe to send, and whether a stop string was found.
    pub fn push(&mut self, piece: &str) -> (&str, bool) {
        let from = self.text.len();
        self.text.push_str(piece);
        // A match may begin up to (longest stop − 1) bytes before the new piece.
        let mut search = from.saturating_sub(self.longest.saturating_sub(1));
        while !self.text.is_char_boundary(search) {
            search -= 1;
        }
        let found = self
            .stops
            .iter()
            .filter_map(|stop| self.text[search..].find(stop.as_str()).map(|i| search + i))
            .min();
        if let Some(end) = found {
            self.text.truncate(end);
            let start = self.sent.min(end);
            self.sent = end;
            return (&self.text[start..end], true);
        }
        let end = self.text.len() - self.held_back();
        let start = self.sent;
        self.sent = end.max(start);
        (&self.text[start..self.sent], false)
    }

    /// The text held back at the end of the answer (no stop string came).
    pub fn finish(&mut self) -> &str {
        let start = self.sent;
        self.sent = self.text.len();
        &self.text[start..]
    }

    /// The whole answer so far, without any stop string.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The longest end of the text that begins some stop string, in bytes.
    fn held_back(&self) -> usize {
        let text = &self.text[self.sent..];
        self.stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len().min(text.len() + 1))
                    .rev()
                    .filter(|&n| stop.is_char_boundary(n))
                    .find(|&n| text.ends_with(&stop[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut scanner = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
        let mut sent = String::new();
        for piece in pieces {
            let (out, stopped) = scanner.push(piece);
            sent.push_str(out);
            if stopped {
                assert_eq!(sent, scanner.text());
                return (sent, true);
            }
        }
        sent.push_str(scanner.finish());
        assert_eq!(sent, scanner.text());
        (sent, false)
    }

    #[test]
    fn a_stop_string_ends_the_answer_before_it_even_across_pieces() {
        assert_eq!(
            run(&["END"], &["red ", "circle", "E", "N", "D more"]),
            ("red circle".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        // The earliest of several.
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".into(), true));
        // At the very start.
        assert_eq!(run(&["red"], &["red circle"]), ("".into(), true));
    }

    #[test]
    fn held_back_text_that_is_no_stop_is_sent_later() {
        let mut scanner = StopScanner::new(vec!["STOP".into()]);
        assert_eq!(scanner.push("a ST"), ("a ", false));
        assert_eq!(scanner.push("O"), ("", false));
        assert_eq!(scanner.push("RY"), ("STORY", false));
        assert_eq!(run(&["STOP"], &["ST"]), ("ST".into(), false));
        assert_eq!(run(&[], &["any", "thing"]), ("anything".into(), false));
        assert_eq!(
            run(&[""], &["empty stops are ignored"]),
            ("empty stops are ignored".into(), false)
        );
    }

    #[test]
    fn multibyte_text_is_never_split() {
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        assert_eq!(
            run(&["🙂🙃"], &["ok 🙂", " fine"]),
            ("ok 🙂 fine".into(), false)
        );
        assert_eq!(run(&["x"], &["日本語x"]), ("日本語".into(), true));
    }
}
