//! GPT-2's byte ↔ unicode mapping: every byte gets a printable character, so a byte-level BPE
//! vocabulary is plain text (`Ġ` is the space byte, `Ċ` the newline). Owns the two tables; knows
//! nothing of tokens.

use std::sync::OnceLock;

/// The character GPT-2 writes for each byte.
pub fn byte_to_char(byte: u8) -> char {
    tables().0[byte as usize]
}

/// The byte a byte-level character stands for, or `None` for a character outside the alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    let tables = tables();
    let i = c as usize;
    if i < tables.1.len() {
        let b = tables.1[i];
        // 0 is both "byte 0" (which is U+0100) and "not in the alphabet"; tell them apart.
        if b != 0 || c == '\u{100}' {
            return Some(b);
        }
    }
    None
}

/// Appends `text` as bytes to `out` if every character is in the alphabet (else leaves `out` as it
/// was and returns false).
pub fn decode_str(text: &str, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                return false;
            }
        }
    }
    true
}

/// The characters for bytes 0..=255, and the inverse over code points below 0x144 (the largest
/// character the mapping uses is U+0143).
fn tables() -> &'static ([char; 256], [u8; 0x144]) {
    static TABLES: OnceLock<([char; 256], [u8; 0x144])> = OnceLock::new();
    TABLES.get_or_init(|| {
        // Printable Latin-1 bytes map to themselves; the rest, in byte order, to U+0100 onwards.
        let printable =
            |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let mut forward = ['\0'; 256];
        let mut inverse = [0u8; 0x144];
        let mut next = 0x100u32;
        for b in 0..256u32 {
            let code = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            // Every code is below 0x144 and a valid scalar value by construction.
            let c = char::from_u32(code).unwrap_or('\0');
            forward[b as usize] = c;
            inverse[code as usize] = b as u8;
        }
        (forward, inverse)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte_and_matches_gpt2() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0), '\u{100}');
        assert_eq!(byte_to_char(0xad), '\u{143}');
        assert_eq!(char_to_byte('日'), None);
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
    }
}
