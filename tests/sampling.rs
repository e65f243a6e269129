//! Token sampling: greedy is the first argmax, top-k 1 is greedy, top-p keeps the smallest prefix
//! with enough mass, the repetition penalty follows HF's formula, a seed fixes the sequence, and
//! draws follow softmax(logits / T) (checked against the closed form with a binomial bound).

use latte::sampling::{SamplingError, SamplingParams, TokenSampler};

fn params(temperature: f32, top_k: usize, top_p: f32, penalty: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        repetition_penalty: penalty,
        seed,
    }
}

fn sampler(p: SamplingParams, vocab: usize) -> TokenSampler {
    TokenSampler::new(p, vocab).unwrap()
}

#[test]
fn greedy_is_the_first_maximum() {
    let mut s = sampler(SamplingParams::greedy(), 6);
    assert_eq!(
        s.sample(&mut [0.0, 3.0, -1.0, 3.0, 2.9, f32::NAN], &[])
            .unwrap(),
        1
    );
    assert_eq!(
        s.sample(
            &mut [f32::NEG_INFINITY, -5.0, -7.0, -5.0, f32::NAN, -6.0],
            &[]
        )
        .unwrap(),
        1
    );
    assert_eq!(
        s.sample(&mut [f32::NAN; 6], &[]),
        Err(SamplingError::NoCandidates)
    );
}

#[test]
fn top_k_one_is_greedy_whatever_the_seed_and_temperature() {
    let logits = [0.5, 2.0, 1.9, -3.0, 2.0, 0.0];
    for seed in 0..50 {
        let mut s = sampler(params(1.5, 1, 1.0, 1.0, seed), logits.len());
        assert_eq!(s.sample(&mut logits.clone(), &[]).unwrap(), 1);
    }
}

/// Empirical frequencies of `draws` samples.
fn frequencies(p: SamplingParams, logits: &[f32], draws: usize) -> Vec<f64> {
    let mut s = sampler(p, logits.len());
    let mut counts = vec![0usize; logits.len()];
    let mut work = logits.to_vec();
    for _ in 0..draws {
        work.copy_from_slice(logits);
        counts[s.sample(&mut work, &[]).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// |f - p| within 4.5 standard deviations of a binomial proportion (a two-sided chance of about
/// 7e-6 per token for a correct sampler; the seed is fixed, so the test is deterministic anyway).
fn assert_close(freq: &[f64], expected: &[f64], draws: usize) {
    for (i, (&f, &p)) in freq.iter().zip(expected).enumerate() {
        let sigma = (p * (1.0 - p) / draws as f64).sqrt();
        assert!(
            (f - p).abs() <= 4.5 * sigma + 1e-12,
            "token {i}: frequency {f}, expected {p}"
        );
    }
}

#[test]
fn draws_follow_the_tempered_softmax() {
    let logits = [1.0f32, 0.5, 0.0, -1.0, 2.0, 1.5];
    let draws = 20_000;
    for t in [0.7f64, 1.0, 1.8] {
        let freq = frequencies(params(t as f32, 0, 1.0, 1.0, 42), &logits, draws);
        assert_close(&freq, &softmax(&logits, t), draws);
    }
    // Top-k 3 renormalizes over the three largest logits (2.0, 1.5, 1.0).
    let freq = frequencies(params(1.0, 3, 1.0, 1.0, 7), &logits, draws);
    let kept = softmax(&[1.0, 2.0, 1.5], 1.0);
    let expected = [kept[0], 0.0, 0.0, 0.0, kept[1], kept[2]];
    assert_close(&freq, &expected, draws);
}

#[test]
fn top_p_keeps_the_smallest_prefix_with_enough_mass() {
    // Probabilities 0.5, 0.25, 0.125, 0.125 (ln 4, ln 2, 0, 0).
    let logits = [0.0f32, 4f32.ln(), 0.0, 2f32.ln()];
    let draws = 20_000;
    // p = 0.45: the first token alone has mass 0.5 ≥ p (not p = 0.5 itself: the computed mass
    // may round a hair either side of it).
    let f = frequencies(params(1.0, 0, 0.45, 1.0, 1), &logits, draws);
    assert_eq!(f, [0.0, 1.0, 0.0, 0.0]);
    // p = 0.6: 0.5 < 0.6 ≤ 0.75, so the two largest, renormalized to 2/3 and 1/3.
    let f = frequencies(params(1.0, 0, 0.6, 1.0, 2), &logits, draws);
    assert_eq!(f[0] + f[2], 0.0);
    assert_close(&f, &[0.0, 2.0 / 3.0, 0.0, 1.0 / 3.0], draws);
    // p = 0.8: three tokens; of the two tied at 0.125 the lower id is kept.
    let f = frequencies(params(1.0, 0, 0.8, 1.0, 3), &logits, draws);
    assert_eq!(f[2], 0.0);
    assert_close(&f, &[1.0 / 7.0, 4.0 / 7.0, 0.0, 2.0 / 7.0], draws);
    // Top-p applies before temperature (llama.cpp's order): at T = 5 the same two survive.
    let f = frequencies(params(5.0, 0, 0.6, 1.0, 4), &logits, draws);
    assert_eq!(f[0] + f[2], 0.0);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits_once() {
    let mut s = sampler(params(0.0, 0, 1.0, 2.0, 0), 4);
    let mut logits = [3.0, -1.0, 0.5, 2.0];
    // Token 0 appears twice but is penalized once; token 9 is outside the vocabulary.
    let next = s.sample(&mut logits, &[0, 1, 0, 9]).unwrap();
    assert_eq!(logits, [1.5, -2.0, 0.5, 2.0]);
    assert_eq!(next, 3);
    // The next step starts clean: the same history penalizes the same way.
    let mut logits = [3.0, -1.0, 0.5, 2.0];
    s.sample(&mut logits, &[0, 1, 0]).unwrap();
    assert_eq!(logits, [1.5, -2.0, 0.5, 2.0]);
}

#[test]
fn a_seed_fixes_the_sequence() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
    let run = |seed| {
        let mut s = sampler(params(0.9, 20, 0.9, 1.1, seed), logits.len());
        let mut history = Vec::new();
        for _ in 0..64 {
            let mut l = logits.clone();
            let id = s.sample(&mut l, &history).unwrap();
            history.push(id);
        }
        history
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn invalid_parameters_and_inputs_are_typed_errors() {
    let bad = [
        (
            params(-0.1, 0, 1.0, 1.0, 0),
            SamplingError::Temperature(-0.1),
        ),
        (
            params(f32::INFINITY, 0, 1.0, 1.0, 0),
            SamplingError::Temperature(f32::INFINITY),
        ),
        (params(1.0, 0, 0.0, 1.0, 0), SamplingError::TopP(0.0)),
        (params(1.0, 0, 1.01, 1.0, 0), SamplingError::TopP(1.01)),
        (
            params(1.0, 0, 1.0, 0.0, 0),
            SamplingError::RepetitionPenalty(0.0),
        ),
        (
            params(1.0, 0, 1.0, -1.0, 0),
            SamplingError::RepetitionPenalty(-1.0),
        ),
    ];
    for (p, e) in bad {
        assert_eq!(TokenSampler::new(p, 4).err(), Some(e));
    }
    // NaN compares unequal to itself, so match the variants.
    assert!(matches!(
        TokenSampler::new(params(f32::NAN, 0, 1.0, 1.0, 0), 4),
        Err(SamplingError::Temperature(_))
    ));
    assert!(matches!(
        TokenSampler::new(params(1.0, 0, f32::NAN, 1.0, 0), 4),
        Err(SamplingError::TopP(_))
    ));
    assert!(matches!(
        TokenSampler::new(params(1.0, 0, 1.0, f32::NAN, 0), 4),
        Err(SamplingError::RepetitionPenalty(_))
    ));
    assert!(matches!(
        TokenSampler::new(SamplingParams::default(), 0),
        Err(SamplingError::EmptyVocabulary)
    ));
    let mut s = sampler(SamplingParams::default(), 4);
    assert_eq!(
        s.sample(&mut [0.0; 3], &[]),
        Err(SamplingError::LogitCount {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        s.sample(&mut [f32::NEG_INFINITY; 4], &[]),
        Err(SamplingError::NoCandidates)
    );
    // +inf logits take all the mass; NaN never wins.
    for _ in 0..20 {
        assert_eq!(
            s.sample(&mut [f32::NAN, 1.0, f32::INFINITY, 0.0], &[])
                .unwrap(),
            2
        );
    }
}

#[test]
fn top_p_beyond_the_first_partial_sort_keeps_exactly_the_prefix() {
    // 100 tokens at logit 0, one at -0.5 (the nucleus' last), 499 at -1.5, scrambled: with
    // Z = 100 + e^-0.5 + 499 e^-1.5 ≈ 211.94 the 100 hold 0.4718 of the mass and with the 101st
    // 0.4747, so p = 0.4735 keeps exactly 101 tokens: more than the sampler's first partial sort
    // (64), so its growing sort must take a second round.
    let vocab = 600usize;
    let rank_of = |i: usize| (i * 397) % vocab;
    let logits: Vec<f32> = (0..vocab)
        .map(|i| match rank_of(i) {
            r if r < 100 => 0.0,
            100 => -0.5,
            _ => -1.5,
        })
        .collect();
    let boundary = (0..vocab).find(|&i| rank_of(i) == 100).unwrap();
    let mut s = sampler(params(1.0, 0, 0.4735, 1.0, 11), vocab);
    let draws = 2000;
    let mut boundary_draws = 0;
    let mut work = logits.clone();
    for _ in 0..draws {
        work.copy_from_slice(&logits);
        let id = s.sample(&mut work, &[]).unwrap() as usize;
        assert!(rank_of(id) <= 100, "token {id} is outside the nucleus");
        boundary_draws += usize::from(id == boundary);
    }
    // Renormalized over the nucleus, the last token has e^-0.5 / (100 + e^-0.5) ≈ 0.0060.
    let p_boundary = (-0.5f64).exp() / (100.0 + (-0.5f64).exp());
    assert_close(
        &[boundary_draws as f64 / draws as f64],
        &[p_boundary],
        draws,
    );
    assert!(boundary_draws > 0);
}
