//! Byte-pair merging of one pre-tokenized piece: start from one token per byte and apply the
//! lowest-ranked merge present, leftmost first, until none applies (HF `tokenizers`' order).
//! A heap of candidate pairs over a linked list of symbols keeps a long piece O(n log n) instead
//! of the naive O(n²). Owns the merge table; knows nothing of text splitting or special tokens.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::error::TokenizerError;

/// The merge table: a pair of token ids → (rank, merged token id).
pub struct Merges {
    pairs: HashMap<(u32, u32), (u32, u32)>,
}

impl Merges {
    /// `merges[rank]` is `"left right"`; `id_of` looks a token text up. Later duplicates of a pair
    /// replace earlier ones, as in HF `tokenizers`.
    pub fn new(
        merges: &[String],
        id_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<Merges, TokenizerError> {
        let mut pairs = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            let invalid = |reason| TokenizerError::InvalidMerge {
                rank,
                merge: merge.clone(),
                reason,
            };
            let (left, right) = merge
                .split_once(' ')
                .filter(|(l, r)| !l.is_empty() && !r.is_empty() && !r.contains(' '))
                .ok_or_else(|| invalid("not two tokens separated by one space"))?;
            let left_id =
                id_of(left).ok_or_else(|| invalid("its left token is not in the vocabulary"))?;
            let right_id =
                id_of(right).ok_or_else(|| invalid("its right token is not in the vocabulary"))?;
            let merged = id_of(&format!("{left}{right}"))
                .ok_or_else(|| invalid("the merged token is not in the vocabulary"))?;
            let rank = u32::try_from(rank).map_err(|_| invalid("too many merges"))?;
            pairs.insert((left_id, right_id), (rank, merged));
        }
        Ok(Merges { pairs })
    }

    fn get(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.pairs.get(&(left, right)).copied()
    }
}

/// No neighbour.
const NONE: u32 = u32::MAX;

/// One symbol of the piece being merged: its token and its live neighbours (`NONE` at the ends).
/// u32 links keep a multi-megabyte piece's scratch small.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

/// A candidate merge: ordered by rank, then by position (leftmost first).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: u32,
    right: u32,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

/// Scratch reused across pieces, so encoding a long text does not allocate per piece.
#[derive(Default)]
pub struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<Candidate>>,
}

impl Merges {
    /// Appends the ids of the piece whose per-byte tokens are `byte_ids` to `out`. The caller
    /// keeps pieces below 4 GiB (`Tokenizer` caps its input far lower).
    pub fn encode(&self, byte_ids: &[u32], scratch: &mut BpeScratch, out: &mut Vec<u32>) {
        let symbols = &mut scratch.symbols;
        let heap = &mut scratch.heap;
        symbols.clear();
        heap.clear();
        let n = byte_ids.len().min(NONE as usize - 1);
        symbols.extend(byte_ids[..n].iter().enumerate().map(|(i, &id)| Symbol {
            id,
            prev: if i == 0 { NONE } else { i as u32 - 1 },
            next: if i + 1 < n { i as u32 + 1 } else { NONE },
            alive: true,
        }));
        let push = |heap: &mut BinaryHeap<Reverse<Candidate>>,
                    symbols: &[Symbol],
                    left: u32,
                    right: u32| {
            let (left_id, right_id) = (symbols[left as usize].id, symbols[right as usize].id);
            if let Some((rank, merged)) = self.get(left_id, right_id) {
                heap.push(Reverse(Candidate {
                    rank,
                    left,
                    right,
                    left_id,
                    right_id,
                    merged,
                }));
            }
        };
        for i in 1..n as u32 {
            push(heap, symbols, i - 1, i);
        }
        while let Some(Reverse(c)) = heap.pop() {
            let (l, r) = (symbols[c.left as usize], symbols[c.right as usize]);
            // Stale when either side was merged away or has changed since the pair was queued.
            let current =
                l.alive && r.alive && l.next == c.right && l.id == c.left_id && r.id == c.right_id;
            if !current {
                continue;
            }
            symbols[c.left as usize].id = c.merged;
            symbols[c.left as usize].next = r.next;
            symbols[c.right as usize].alive = false;
            if r.next != NONE {
                symbols[r.next as usize].prev = c.left;
                push(heap, symbols, c.left, r.next);
            }
            if l.prev != NONE {
                push(heap, symbols, l.prev, c.left);
            }
        }
        let mut at = if n > 0 { 0 } else { NONE };
        while at != NONE {
            out.push(symbols[at as usize].id);
            at = symbols[at as usize].next;
        }
    }
}
