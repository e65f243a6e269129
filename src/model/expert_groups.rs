//! Which tensors belong to which expert group of a LaTtE-Flow file, and where each group's bytes lie.
//!
//! The replica's layers are `flow.blk.{layer}.*`, in `latte.flow.group_count` contiguous groups of
//! `latte.flow.layer_count / group_count` layers; per-group heads (switch `per_group_head`) are
//! `flow.group.{k}.*`. Every other tensor is shared or belongs to the VLM. The writer stores each group's
//! tensors contiguously from a 16 KiB boundary, so a group is one byte range to prefetch or evict.
//! This module only names and measures; it does not touch the bytes.

use std::ops::Range;

use thiserror::Error;

use crate::gguf::{GgufFile, TensorInfo};

/// Metadata key: number of replica layers (u32).
pub const KEY_LAYER_COUNT: &str = "latte.flow.layer_count";
/// Metadata key: number of expert groups K (u32).
pub const KEY_GROUP_COUNT: &str = "latte.flow.group_count";
/// Every group's byte range starts on a multiple of this (4 KiB and Apple's 16 KiB pages).
pub const GROUP_ALIGNMENT: u64 = 16 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GroupLayoutError {
    #[error("metadata '{key}' is missing or not an unsigned integer")]
    BadKey { key: &'static str },
    #[error("{layers} replica layers cannot be split into {groups} equal groups")]
    Uneven { layers: u64, groups: u64 },
    #[error("tensor '{name}' names layer {layer}, but the file has {layers} replica layers")]
    LayerOutOfRange {
        name: String,
        layer: u64,
        layers: u64,
    },
    #[error("tensor '{name}' names group {group}, but the file has {groups} groups")]
    GroupOutOfRange {
        name: String,
        group: u64,
        groups: u64,
    },
    #[error("expert group {group} is not contiguous: tensor '{name}' lies outside its run")]
    NotContiguous { group: usize, name: String },
}

/// The group layout a file declares: K groups of M layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    pub group_count: usize,
    pub layers_per_group: usize,
}

/// One group's tensors in a file: their indices in tensor-info order and the byte range they span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRange {
    pub group: usize,
    pub layers: Range<usize>,
    pub tensors: Vec<usize>,
    pub bytes: Range<u64>,
}

impl GroupLayout {
    /// The layout a file declares, or `None` for a file without a generation replica.
    pub fn from_file(file: &GgufFile) -> Result<Option<GroupLayout>, GroupLayoutError> {
        let Some(groups) = file.get(KEY_GROUP_COUNT) else {
            return Ok(None);
        };
        let groups = groups.as_u64().ok_or(GroupLayoutError::BadKey {
            key: KEY_GROUP_COUNT,
        })?;
        let layers =
            file.get(KEY_LAYER_COUNT)
                .and_then(|v| v.as_u64())
                .ok_or(GroupLayoutError::BadKey {
                    key: KEY_LAYER_COUNT,
                })?;
        if groups == 0 || layers == 0 || layers % groups != 0 {
            return Err(GroupLayoutError::Uneven { layers, groups });
        }
        Ok(Some(GroupLayout {
            group_count: groups as usize,
            layers_per_group: (layers / groups) as usize,
        }))
    }

    pub fn layer_count(&self) -> usize {
        self.group_count * self.layers_per_group
    }

    /// The group a tensor belongs to, by its name; `None` for shared and VLM tensors.
    pub fn group_of(&self, name: &str) -> Result<Option<usize>, GroupLayoutError> {
        if let Some(layer) = index_after(name, "flow.blk.") {
            let layers = self.layer_count() as u64;
            if layer >= layers {
                return Err(GroupLayoutError::LayerOutOfRange {
                    name: name.into(),
                    layer,
                    layers,
                });
            }
            return Ok(Some(layer as usize / self.layers_per_group));
        }
        if let Some(group) = index_after(name, "flow.group.") {
            let groups = self.group_count as u64;
            if group >= groups {
                return Err(GroupLayoutError::GroupOutOfRange {
                    name: name.into(),
                    group,
                    groups,
                });
            }
            return Ok(Some(group as usize));
        }
        Ok(None)
    }

    /// Each group's tensors and byte range in `tensors` (file order). Fails when a group's tensors
    /// are not one contiguous run, since then the group cannot be streamed as one range.
    pub fn ranges(&self, tensors: &[TensorInfo]) -> Result<Vec<GroupRange>, GroupLayoutError> {
        let mut ranges: Vec<GroupRange> = (0..self.group_count)
            .map(|group| GroupRange {
                group,
                layers: group * self.layers_per_group..(group + 1) * self.layers_per_group,
                tensors: Vec::new(),
                bytes: 0..0,
            })
            .collect();
        for (index, info) in tensors.iter().enumerate() {
            let Some(group) = self.group_of(&info.name)? else {
                continue;
            };
            let range = &mut ranges[group];
            if let Some(&last) = range.tensors.last() {
                if last + 1 != index {
                    return Err(GroupLayoutError::NotContiguous {
                        group,
                        name: info.name.clone(),
                    });
                }
            } else {
                range.bytes.start = info.offset;
            }
            range.tensors.push(index);
            range.bytes.end = info.offset + info.n_bytes;
        }
        Ok(ranges)
    }
}

/// The decimal index right after `prefix` and before the next '.', if `name` has that shape.
fn index_after(name: &str, prefix: &str) -> Option<u64> {
    let rest = name.strip_prefix(prefix)?;
    let digits = rest.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, offset: u64, n_bytes: u64) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ty: crate::dtype::TensorType::F32,
            dims: vec![n_bytes / 4],
            offset,
            n_bytes,
        }
    }

    #[test]
    fn names_map_to_groups() {
        let layout = GroupLayout {
            group_count: 4,
            layers_per_group: 2,
        };
        assert_eq!(layout.group_of("flow.blk.0.attn_q.weight"), Ok(Some(0)));
        assert_eq!(layout.group_of("flow.blk.7.ffn_up.weight"), Ok(Some(3)));
        assert_eq!(layout.group_of("flow.group.2.head.weight"), Ok(Some(2)));
        assert_eq!(layout.group_of("flow.patch_embd.weight"), Ok(None));
        assert_eq!(layout.group_of("blk.3.attn_q.weight"), Ok(None));
        assert_eq!(layout.group_of("flow.blk.x.attn_q.weight"), Ok(None));
        assert!(layout.group_of("flow.blk.8.attn_q.weight").is_err());
        assert!(layout.group_of("flow.group.4.head.weight").is_err());
    }

    #[test]
    fn ranges_span_contiguous_runs() {
        let layout = GroupLayout {
            group_count: 2,
            layers_per_group: 1,
        };
        let tensors = vec![
            info("token_embd.weight", 0, 64),
            info("flow.blk.0.a", 16384, 32),
            info("flow.blk.0.b", 16416, 32),
            info("flow.blk.1.a", 32768, 32),
        ];
        let ranges = layout.ranges(&tensors).unwrap();
        assert_eq!(ranges[0].bytes, 16384..16448);
        assert_eq!(ranges[0].tensors, vec![1, 2]);
        assert_eq!(ranges[1].bytes, 32768..32800);

        let broken = vec![
            info("flow.blk.0.a", 0, 4),
            info("x", 4, 4),
            info("flow.blk.0.b", 8, 4),
        ];
        assert!(matches!(
            layout.ranges(&broken),
            Err(GroupLayoutError::NotContiguous { group: 0, .. })
        ));
    }
}
