//! A bounds-checked little-endian cursor over the bytes of a GGUF header.
//!
//! Every read either returns bytes that exist or a [`FormatError::Truncated`] naming the field
//! and offset; counts read from the file are checked against the bytes that remain before anything
//! is allocated for them. It must not know the GGUF layout (the parser does).

use super::error::FormatError;

pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// Absolute position of the next byte.
    pub fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: u64, field: &str) -> Result<&'a [u8], FormatError> {
        let available = self.remaining();
        if n > available {
            return Err(FormatError::Truncated {
                field: field.into(),
                offset: self.pos(),
                needed: n,
                available,
            });
        }
        // n <= remaining <= usize::MAX, so the cast and the slice are in bounds.
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u32(&mut self, field: &str) -> Result<u32, FormatError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, field: &str) -> Result<u64, FormatError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A count of items that each take at least `min_item_bytes` in the file: refused when the
    /// remaining bytes could not hold that many, so a hostile count never drives an allocation.
    pub fn count(&mut self, min_item_bytes: u64, field: &str) -> Result<u64, FormatError> {
        let offset = self.pos();
        let count = self.u64(field)?;
        let remaining = self.remaining();
        if count > remaining / min_item_bytes.max(1) {
            return Err(FormatError::CountTooLarge {
                field: field.into(),
                offset,
                count,
                remaining,
            });
        }
        Ok(count)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator).
    pub fn string(&mut self, field: &str) -> Result<String, FormatError> {
        let offset = self.pos();
        let len = self.u64(field)?;
        let bytes = self.take(len, field).map_err(|e| match e {
            FormatError::Truncated {
                field, available, ..
            } => FormatError::Truncated {
                field,
                offset,
                needed: len,
                available,
            },
            other => other,
        })?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FormatError::InvalidUtf8 {
                field: field.into(),
                offset,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let bytes = [1u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.u32("a").unwrap(), 1);
        assert_eq!(c.u64("b").unwrap(), 2);
        assert!(matches!(
            c.u32("c"),
            Err(FormatError::Truncated {
                offset: 12,
                needed: 4,
                available: 1,
                ..
            })
        ));
        assert_eq!(c.u8("d").unwrap(), 9);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn strings_are_bounded_and_utf8() {
        let mut ok = 3u64.to_le_bytes().to_vec();
        ok.extend_from_slice(b"abc");
        assert_eq!(Cursor::new(&ok).string("s").unwrap(), "abc");

        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"abc");
        assert!(matches!(
            Cursor::new(&huge).string("s"),
            Err(FormatError::Truncated { offset: 0, .. })
        ));

        let mut bad = 2u64.to_le_bytes().to_vec();
        bad.extend_from_slice(&[0xc3, 0x28]);
        assert!(matches!(
            Cursor::new(&bad).string("s"),
            Err(FormatError::InvalidUtf8 { offset: 0, .. })
        ));
    }

    #[test]
    fn counts_are_bounded_by_remaining_bytes() {
        let mut b = 2u64.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        assert_eq!(Cursor::new(&b).count(4, "n").unwrap(), 2);
        assert!(matches!(
            Cursor::new(&b).count(5, "n"),
            Err(FormatError::CountTooLarge { count: 2, .. })
        ));
    }
}
