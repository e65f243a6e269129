//! Which pages of a mapped LaTtE-Flow file are resident, phase by phase (issue 6 §5): after the
//! prompt prefill the VLM's pages are released; during sampling only the active group's and the
//! shared generation tensors' pages are touched; the next group's range is prefetched during the
//! current group's last step; with a memory budget (or a file larger than free memory) a finished
//! group's range is released. Also the predicted peak working memory per phase (`--dry-run`).
//!
//! This module owns the byte ranges and the advice; it must not compute. Files held in memory (the
//! embedded demo model) take no advice: every call is then a no-op.

use std::ops::Range;

use crate::gguf::{is_padding_tensor, PageAdvice};
use crate::model::expert_groups::{GroupLayout, GroupLayoutError};
use crate::model::ModelFile;

/// Byte ranges (absolute, coalesced) of each part of a file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileParts {
    /// The VLM's text decoder layers and norms (`blk.*`, `output_norm`).
    pub text: Vec<Range<u64>>,
    /// The vocabulary matrices (`token_embd`, `output`): a prompt prefill reads only its tokens'
    /// embedding rows and no logits, so these stay mostly unread.
    pub vocabulary: Vec<Range<u64>>,
    /// The VLM's vision encoder (`v.*`, `mm.*`); untouched by text-only prompts.
    pub vision: Vec<Range<u64>>,
    /// Generation tensors shared by all groups (`flow.*` outside any group).
    pub shared: Vec<Range<u64>>,
    /// Each expert group's range (its layers and, with per-group heads, its ends).
    pub groups: Vec<Vec<Range<u64>>>,
    /// The DC-AE decoder (`dcae.*`).
    pub decoder: Vec<Range<u64>>,
}

/// Total bytes of some ranges.
pub fn total(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

fn push(ranges: &mut Vec<Range<u64>>, range: Range<u64>, gap: u64) {
    if let Some(last) = ranges.last_mut() {
        // Tensors of one part are packed back to back up to alignment padding.
        if range.start >= last.end && range.start - last.end <= gap {
            last.end = range.end;
            return;
        }
    }
    ranges.push(range);
}

impl FileParts {
    /// Classifies every tensor of `file` by name.
    pub fn of(file: &ModelFile) -> Result<Self, GroupLayoutError> {
        let gguf = file.gguf();
        let layout = GroupLayout::from_file(gguf)?;
        let mut parts = FileParts {
            groups: vec![Vec::new(); layout.map_or(0, |l| l.group_count)],
            ..Default::default()
        };
        let gap = gguf.alignment().max(1);
        for info in gguf.tensor_infos() {
            let name = info.name.as_str();
            if is_padding_tensor(name) {
                continue;
            }
            let range = info.offset..info.offset + info.n_bytes;
            let target = if name.starts_with("flow.") {
                match layout.map(|l| l.group_of(name)).transpose()?.flatten() {
                    Some(k) => &mut parts.groups[k],
                    None => &mut parts.shared,
                }
            } else if name.starts_with("dcae.") {
                &mut parts.decoder
            } else if name.starts_with("v.") || name.starts_with("mm.") {
                &mut parts.vision
            } else if name == "token_embd.weight" || name == "output.weight" {
                &mut parts.vocabulary
            } else {
                &mut parts.text
            };
            push(target, range, gap);
        }
        Ok(parts)
    }
}

/// When finished groups are released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleasePolicy {
    /// Keep every group's pages once read (enough memory).
    Keep,
    /// Release a group's range when sampling leaves it (`--mem-budget`, or a file larger than
    /// free memory).
    ReleaseFinished,
}

/// Gives the kernel advice about one file's parts as generation moves through its phases.
pub struct Residency<'f> {
    file: &'f ModelFile,
    parts: FileParts,
    policy: ReleasePolicy,
}

impl<'f> Residency<'f> {
    pub fn new(file: &'f ModelFile, policy: ReleasePolicy) -> Result<Self, GroupLayoutError> {
        Ok(Residency {
            file,
            parts: FileParts::of(file)?,
            policy,
        })
    }

    pub fn parts(&self) -> &FileParts {
        &self.parts
    }

    pub fn policy(&self) -> ReleasePolicy {
        self.policy
    }

    fn advise(&self, ranges: &[Range<u64>], advice: PageAdvice) {
        for range in ranges {
            self.file.gguf().advise(range.clone(), advice);
        }
    }

    /// After the prefill: the VLM is not needed again for this image.
    pub fn release_vlm(&self) {
        self.advise(&self.parts.text, PageAdvice::DontNeed);
        self.advise(&self.parts.vocabulary, PageAdvice::DontNeed);
        self.advise(&self.parts.vision, PageAdvice::DontNeed);
    }

    /// Before sampling: the shared generation tensors and the first group will be read next.
    pub fn prefetch_shared(&self) {
        self.advise(&self.parts.shared, PageAdvice::WillNeed);
    }

    pub fn prefetch_group(&self, group: usize) {
        if let Some(ranges) = self.parts.groups.get(group) {
            self.advise(ranges, PageAdvice::WillNeed);
        }
    }

    /// Sampling left `group` for good: release it under [`ReleasePolicy::ReleaseFinished`].
    pub fn finish_group(&self, group: usize) {
        if self.policy == ReleasePolicy::ReleaseFinished {
            if let Some(ranges) = self.parts.groups.get(group) {
                self.advise(ranges, PageAdvice::DontNeed);
            }
        }
    }

    /// A device holds `group` now (it was copied there): its file pages are not needed on the
    /// host, whatever the policy.
    pub fn release_uploaded_group(&self, group: usize) {
        if let Some(ranges) = self.parts.groups.get(group) {
            self.advise(ranges, PageAdvice::DontNeed);
        }
    }

    /// Before sampling: drop every group's pages that loading touched (norms and biases are
    /// copied), so sampling starts with none resident.
    pub fn release_all_groups(&self) {
        for ranges in &self.parts.groups {
            self.advise(ranges, PageAdvice::DontNeed);
        }
    }

    /// After loading: the decoder is not needed until the last phase.
    pub fn release_decoder(&self) {
        self.advise(&self.parts.decoder, PageAdvice::DontNeed);
    }

    /// Before decoding: the sampler's tensors are done.
    pub fn release_generation(&self) {
        self.advise(&self.parts.shared, PageAdvice::DontNeed);
        for ranges in &self.parts.groups {
            self.advise(ranges, PageAdvice::DontNeed);
        }
        self.advise(&self.parts.decoder, PageAdvice::WillNeed);
    }
}

/// Predicted peak working memory of one phase: the file bytes it keeps resident plus its own
/// buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseMemory {
    pub phase: String,
    pub weights: u64,
    pub buffers: u64,
}

impl PhaseMemory {
    pub fn total(&self) -> u64 {
        self.weights + self.buffers
    }
}

/// Activation sizes the memory plan needs (bytes), from the models' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSizes {
    pub prefill: u64,
    pub sampling: u64,
    pub decode: u64,
}

/// The predicted peak per phase, in the order they run: prefill, each group (layerwise) or one
/// dense phase, decode. `groups_in_order` lists the groups sampling visits.
pub fn memory_plan(
    parts: &FileParts,
    policy: ReleasePolicy,
    dense: bool,
    groups_in_order: &[usize],
    buffers: BufferSizes,
) -> Vec<PhaseMemory> {
    let group_bytes = |k: usize| parts.groups.get(k).map_or(0, |r| total(r));
    let shared = total(&parts.shared);
    // The prefill reads every decoder layer but only its prompt's rows of the vocabulary matrices
    // (counted with the buffers by the caller).
    let mut plan = vec![PhaseMemory {
        phase: "prefill".into(),
        weights: total(&parts.text),
        buffers: buffers.prefill,
    }];
    if dense {
        plan.push(PhaseMemory {
            phase: "sampling (dense, all groups)".into(),
            weights: shared + (0..parts.groups.len()).map(group_bytes).sum::<u64>(),
            buffers: buffers.sampling,
        });
    } else {
        for (i, &k) in groups_in_order.iter().enumerate() {
            // Resident: this group, the next one (prefetched during the last step) and, when
            // finished groups are kept, every group before.
            let next = groups_in_order.get(i + 1).map_or(0, |&n| group_bytes(n));
            let earlier: u64 = match policy {
                ReleasePolicy::Keep => groups_in_order[..i].iter().map(|&g| group_bytes(g)).sum(),
                ReleasePolicy::ReleaseFinished => 0,
            };
            plan.push(PhaseMemory {
                phase: format!("group {k}"),
                weights: shared + group_bytes(k) + next + earlier,
                buffers: buffers.sampling,
            });
        }
    }
    plan.push(PhaseMemory {
        phase: "decode".into(),
        weights: total(&parts.decoder),
        buffers: buffers.decode,
    });
    plan
}

/// Bytes in binary units, as llama.cpp prints sizes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Parses sizes like `2G`, `512M`, `1.5GiB`, `300000` (bytes); K/M/G/T are powers of 1024.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn release_policy_bounds_the_plan() {
        let parts = FileParts {
            text: vec![0..100],
            vocabulary: vec![],
            vision: vec![],
            shared: vec![100..110],
            groups: vec![vec![200..300], vec![300..400], vec![400..500]],
            decoder: vec![500..520],
        };
        let sizes = BufferSizes {
            prefill: 1,
            sampling: 2,
            decode: 3,
        };
        let keep = memory_plan(&parts, ReleasePolicy::Keep, false, &[0, 1, 2], sizes);
        let release = memory_plan(
            &parts,
            ReleasePolicy::ReleaseFinished,
            false,
            &[0, 1, 2],
            sizes,
        );
        let totals = |p: &[PhaseMemory]| p.iter().map(PhaseMemory::total).collect::<Vec<_>>();
        assert_eq!(totals(&keep), vec![101, 212, 312, 312, 23]);
        assert_eq!(totals(&release), vec![101, 212, 212, 112, 23]);
    }
}
