//! Residency on a real converted file (the base fixture checkpoint): each expert group is one byte
//! range starting on a 16 KiB boundary and disjoint from the other parts; page advice is given for
//! mapped files and refused for in-memory ones; and dropping a group's pages is sound: its tensors
//! read back the same bytes (the private read-only map refaults them from the file).

use latte::gguf::PageAdvice;
use latte::model::expert_groups::GROUP_ALIGNMENT;
use latte::model::ModelFile;
use latte::residency::{total, FileParts, ReleasePolicy, Residency};

mod reference_support;
use reference_support::convert;

#[test]
fn groups_are_aligned_disjoint_ranges_and_advice_is_sound() {
    let tmp = tempfile::tempdir().unwrap();
    let path = convert("base", "f32", tmp.path());
    let file = ModelFile::open(&path).unwrap();
    let parts = FileParts::of(&file).unwrap();
    assert_eq!(parts.groups.len(), 2);
    let mut all: Vec<std::ops::Range<u64>> = Vec::new();
    for group in &parts.groups {
        assert_eq!(group.len(), 1, "a group is one range: {group:?}");
        assert_eq!(group[0].start % GROUP_ALIGNMENT, 0);
    }
    for ranges in [
        &parts.text,
        &parts.vocabulary,
        &parts.vision,
        &parts.shared,
        &parts.decoder,
    ]
    .into_iter()
    .chain(parts.groups.iter())
    {
        assert!(total(ranges) > 0);
        all.extend(ranges.iter().cloned());
    }
    all.sort_by_key(|r| r.start);
    assert!(all.windows(2).all(|w| w[0].end <= w[1].start), "{all:?}");
    assert!(all.last().unwrap().end <= file.gguf().bytes().len() as u64);

    // Every replica tensor of group 1 lies in its range.
    let group1 = &parts.groups[1][0];
    for info in file.gguf().tensor_infos() {
        if info.name.starts_with("flow.blk.2.") || info.name.starts_with("flow.blk.3.") {
            assert!(group1.start <= info.offset && info.offset + info.n_bytes <= group1.end);
        }
    }

    let name = "flow.blk.2.attn_q.weight";
    let before = file.tensor(name).unwrap().bytes().to_vec();
    assert!(file.gguf().advise(group1.clone(), PageAdvice::WillNeed));
    assert!(file.gguf().advise(group1.clone(), PageAdvice::DontNeed));
    assert_eq!(file.tensor(name).unwrap().bytes(), &before[..]);

    let residency = Residency::new(&file, ReleasePolicy::ReleaseFinished).unwrap();
    residency.release_vlm();
    residency.finish_group(0);
    residency.release_generation();
    assert_eq!(file.tensor(name).unwrap().bytes(), &before[..]);

    // A file held in memory takes no advice.
    let in_memory = ModelFile::from_bytes("in memory", std::fs::read(&path).unwrap()).unwrap();
    assert!(!in_memory
        .gguf()
        .advise(group1.clone(), PageAdvice::DontNeed));
}
