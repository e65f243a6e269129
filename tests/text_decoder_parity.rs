//! The text decoder against the PyTorch reference (transformers' Qwen2-VL, fixtures written by
//! tools/reference/make_fixtures.py), on the tied (`base`) and untied (`alt`) fixture models:
//! M-RoPE positions equal `get_rope_index`'s exactly; the logits of every prompt position, the
//! KV cache of a text prompt (`gen.cond.k/v.L`, base: ctx_kv = frozen) and the captured normed
//! layer inputs (`gen.cond.normed_input.L`, alt) agree within f32 reordering tolerances; greedy
//! decoding with the cache gives the reference's tokens.
//!
//! Tolerances: the reference ran in f32 on one thread; we sum in other orders (SIMD dot products,
//! tiled matmuls), so each value differs by a few ulp per reduction, compounded over 4 layers.
//! Hidden-state-like values (keys, values, normed inputs, O(1)) must agree to 1e-4 of their largest
//! magnitude; logits (a reduction of 64 such values more) to 2e-4 of theirs. Measured differences
//! are around 1e-6 (printed with --nocapture), so these bounds catch any real error (a wrong
//! position, section, bias or norm moves values by 1e-2 or more) without depending on rounding.

mod reference_support;

use latte::model::positions::rope_positions;
use latte::model::text::{KvCache, Logits, TextModel, TextScratch};
use latte::model::ModelFile;
use reference_support::{argmax, convert, max_abs_diff, Oracle};

const IMAGE_TOKEN: u32 = 5;
const MERGE: usize = 2;

/// Prompt positions from our `rope_positions`, checked to equal the reference's position ids.
fn checked_positions(oracle: &Oracle, ids: &[u32]) -> (Vec<[u32; 3]>, u32) {
    let grid = oracle.i64("und.image_grid_thw");
    let merged = [
        grid[0] as usize,
        grid[1] as usize / MERGE,
        grid[2] as usize / MERGE,
    ];
    let (positions, next) = rope_positions(ids, IMAGE_TOKEN, &[merged]).unwrap();
    let expected = oracle.i64("und.position_ids");
    let s = ids.len();
    for (i, p) in positions.iter().enumerate() {
        for c in 0..3 {
            assert_eq!(
                p[c] as i64,
                expected[c * s + i],
                "position {i} component {c}"
            );
        }
    }
    let max = expected.iter().copied().max().unwrap();
    assert_eq!(next as i64, max + 1);
    (positions, next)
}

/// Prompt embeddings: token rows, with the reference's merged vision features at the image tokens
/// (so this test checks the decoder alone; the vision tower has its own).
fn prompt_embeddings(model: &TextModel, oracle: &Oracle, ids: &[u32]) -> Vec<f32> {
    let d = model.config().hidden;
    let mut embeddings = vec![0f32; ids.len() * d];
    model.embed_tokens(ids, &mut embeddings).unwrap();
    let vision = oracle.f32("und.vision_embeds");
    let mut image_rows = vision.chunks_exact(d);
    for (id, row) in ids.iter().zip(embeddings.chunks_exact_mut(d)) {
        if *id == IMAGE_TOKEN {
            row.copy_from_slice(image_rows.next().unwrap());
        }
    }
    assert!(image_rows.next().is_none());
    embeddings
}

fn check_understanding(config: &str, ty: &str, logit_tolerance: f32) -> f32 {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert(config, ty, tmp.path())).unwrap();
    let model = TextModel::load(&file).unwrap();
    assert_eq!(model.config().tied, config == "base");
    let oracle = Oracle::open(config);
    let ids = oracle.u32s("und.input_ids");
    let (positions, next) = checked_positions(&oracle, &ids);
    let embeddings = prompt_embeddings(&model, &oracle, &ids);

    let vocab = model.config().vocab;
    let mut cache = KvCache::new(model.config(), 64);
    let mut scratch = TextScratch::new();
    let mut logits = Vec::new();
    model
        .forward(
            &embeddings,
            &positions,
            &mut cache,
            &mut scratch,
            None,
            Logits::All,
            &mut logits,
        )
        .unwrap();
    let expected = oracle.f32("und.logits");
    let (diff, scale) = max_abs_diff(&logits, &expected);
    println!("{config} {ty}: logits max |Δ| = {diff:e} (max |logit| {scale})");
    assert!(
        diff <= logit_tolerance * scale.max(1.0),
        "{config} {ty}: {diff} > {logit_tolerance}·{scale}"
    );

    // Greedy decoding, one token per step through the cache, from the prefill's last logits.
    let mut token = argmax(&logits[(ids.len() - 1) * vocab..]) as u32;
    let mut tokens = vec![token];
    let mut row = vec![0f32; model.config().hidden];
    let greedy = oracle.u32s("und.greedy_tokens");
    for step in 0..greedy.len() - 1 {
        let p = next + step as u32;
        model.embed_tokens(&[token], &mut row).unwrap();
        model
            .forward(
                &row,
                &[[p, p, p]],
                &mut cache,
                &mut scratch,
                None,
                Logits::Last,
                &mut logits,
            )
            .unwrap();
        assert_eq!(logits.len(), vocab);
        token = argmax(&logits) as u32;
        tokens.push(token);
    }
    assert_eq!(tokens, greedy, "{config} {ty}: greedy tokens");
    assert_eq!(cache.len(), ids.len() + greedy.len() - 1);
    diff
}

#[test]
fn logits_and_greedy_tokens_match_transformers_tied() {
    check_understanding("base", "f32", 2e-4);
}

#[test]
fn logits_and_greedy_tokens_match_transformers_untied() {
    check_understanding("alt", "f32", 2e-4);
}

/// Q8_0 weights: the error is reported, and bounded loosely (8-bit blocks of 32 give ≈0.4%
/// relative error per weight; the tiny random model's logits span ±1).
#[test]
fn q8_0_logit_error_is_small() {
    for config in ["base", "alt"] {
        let diff = check_understanding(config, "q8_0", 5e-2);
        println!("{config}: Q8_0 logits max |Δ| vs transformers f32 = {diff:e}");
    }
}

/// Text prompt through the cache (ctx_kv = frozen: these are the prompt K/V generation reads).
#[test]
fn kv_cache_equals_the_reference_prompt_kv() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("base", "f32", tmp.path())).unwrap();
    let model = TextModel::load(&file).unwrap();
    let c = model.config().clone();
    let oracle = Oracle::open("base");
    let ids = oracle.u32s("gen.cond_ids");
    let (positions, _) = rope_positions(&ids, IMAGE_TOKEN, &[]).unwrap();
    let mut embeddings = vec![0f32; ids.len() * c.hidden];
    model.embed_tokens(&ids, &mut embeddings).unwrap();

    // Prefill in two chunks: the second one attends to the first through the cache.
    let split = ids.len() / 2 + 1;
    let mut cache = KvCache::new(&c, ids.len());
    let mut scratch = TextScratch::new();
    let mut out = Vec::new();
    for (rows, pos) in [(0..split), (split..ids.len())].into_iter().map(|r| {
        (
            &embeddings[r.start * c.hidden..r.end * c.hidden],
            &positions[r.start..r.end],
        )
    }) {
        model
            .forward(
                rows,
                pos,
                &mut cache,
                &mut scratch,
                None,
                Logits::None,
                &mut out,
            )
            .unwrap();
        assert!(out.is_empty());
    }
    assert_eq!(cache.len(), ids.len());
    let p = ids.len();
    for l in 0..c.layers {
        let (keys, values) = cache.layer(l);
        for (ours, name) in [
            (keys, format!("gen.cond.k.{l}")),
            (values, format!("gen.cond.v.{l}")),
        ] {
            assert_eq!(oracle.shape(&name), [c.kv_heads, p, c.head_dim]);
            let reference = oracle.f32(&name);
            // [KV heads, P, dh] → our token-major [P, KV heads, dh].
            let mut transposed = vec![0f32; reference.len()];
            for h in 0..c.kv_heads {
                for t in 0..p {
                    for i in 0..c.head_dim {
                        transposed[(t * c.kv_heads + h) * c.head_dim + i] =
                            reference[(h * p + t) * c.head_dim + i];
                    }
                }
            }
            let (diff, scale) = max_abs_diff(ours, &transposed);
            println!("{name}: max |Δ| = {diff:e} (max {scale})");
            assert!(diff <= 1e-4 * scale.max(1.0), "{name}: {diff}");
        }
    }
    // The cache is full: one more token is refused, not written out of bounds.
    let err = model
        .forward(
            &embeddings[..c.hidden],
            &[[0, 0, 0]],
            &mut cache,
            &mut scratch,
            None,
            Logits::Last,
            &mut out,
        )
        .unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
}

/// The captured input_layernorm rows (what ctx_kv = replica projects) on the untied model.
#[test]
fn captured_normed_inputs_equal_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("alt", "f32", tmp.path())).unwrap();
    let model = TextModel::load(&file).unwrap();
    let c = model.config().clone();
    let oracle = Oracle::open("alt");
    for prompt in ["cond", "uncond"] {
        let ids = oracle.u32s(&format!("gen.{prompt}_ids"));
        let (positions, _) = rope_positions(&ids, IMAGE_TOKEN, &[]).unwrap();
        let mut embeddings = vec![0f32; ids.len() * c.hidden];
        model.embed_tokens(&ids, &mut embeddings).unwrap();
        let mut cache = KvCache::new(&c, ids.len());
        let mut capture = Vec::new();
        let mut out = Vec::new();
        model
            .forward(
                &embeddings,
                &positions,
                &mut cache,
                &mut TextScratch::new(),
                Some(&mut capture),
                Logits::None,
                &mut out,
            )
            .unwrap();
        assert_eq!(capture.len(), c.layers);
        for (l, rows) in capture.iter().enumerate() {
            let name = format!("gen.{prompt}.normed_input.{l}");
            let (diff, scale) = max_abs_diff(rows, &oracle.f32(&name));
            println!("{name}: max |Δ| = {diff:e} (max {scale})");
            assert!(diff <= 1e-4 * scale.max(1.0), "{name}: {diff}");
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ModelFile::open(convert("base", "f32", tmp.path())).unwrap();
    let model = TextModel::load(&file).unwrap();
    let c = model.config().clone();
    let mut row = vec![0f32; c.hidden];
    assert!(model.embed_tokens(&[c.vocab as u32], &mut row).is_err());
    assert!(model.embed_tokens(&[0, 1], &mut row).is_err());
    let mut cache = KvCache::new(&c, 4);
    let mut out = Vec::new();
    let mut scratch = TextScratch::new();
    // Embeddings that do not match the positions.
    assert!(model
        .forward(
            &row,
            &[[0; 3], [1; 3]],
            &mut cache,
            &mut scratch,
            None,
            Logits::Last,
            &mut out
        )
        .is_err());
    // A prompt longer than the cache.
    let long = vec![0f32; 5 * c.hidden];
    let err = model
        .forward(
            &long,
            &[[0; 3]; 5],
            &mut cache,
            &mut scratch,
            None,
            Logits::Last,
            &mut out,
        )
        .unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    assert_eq!(cache.len(), 0);
    // A cache too large for memory is an error, not an abort.
    assert!(KvCache::try_new(&c, usize::MAX / 2).is_err());
    // Image tokens that do not match the grids.
    assert!(rope_positions(&[1, 5, 5, 2], IMAGE_TOKEN, &[[1, 2, 2]]).is_err());
    assert!(rope_positions(&[1, 2], IMAGE_TOKEN, &[[1, 1, 1]]).is_err());
    assert!(rope_positions(&[1, 5, 2], IMAGE_TOKEN, &[]).is_err());
}
