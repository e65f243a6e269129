//! Seeded byte mutations of GGUF files, shared by the corruption tests and the differential test
//! against gguf.cpp: a tiny reproducible PRNG and one mutation step.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

/// xorshift64*: a tiny seeded PRNG so the mutations are reproducible without a crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whether [`mutate`] may insert bytes (which shifts everything after the insertion point).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Insertions {
    Allowed,
    Forbidden,
}

/// One random mutation of `m` (which must not be empty, and never becomes empty): a bit flip, a
/// random byte, a whole little-endian integer from `interesting` (counts, lengths, dims,
/// offsets), a truncation, or (when allowed) an insertion of up to 15 random bytes.
pub fn mutate(rng: &mut Rng, m: &mut Vec<u8>, interesting: &[u64], insertions: Insertions) {
    let at = rng.below(m.len());
    let kinds = if insertions == Insertions::Allowed {
        5
    } else {
        4
    };
    match rng.below(kinds) {
        0 => m[at] ^= 1 << rng.below(8),
        1 => m[at] = rng.next() as u8,
        2 => {
            let v = interesting[rng.below(interesting.len())].to_le_bytes();
            let n = [1, 4, 8][rng.below(3)].min(m.len() - at);
            m[at..at + n].copy_from_slice(&v[..n]);
        }
        3 => m.truncate(at.max(1)),
        _ => {
            let n = rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            m.splice(at..at, bytes);
        }
    }
}
