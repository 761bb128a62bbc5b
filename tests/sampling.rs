//! Sampling: each filter on small hand-made distributions, penalties against hand-computed
//! numbers, seed determinism, empirical frequencies, validation.

use webgpu_llm::sampling::{argmax, Sampler, SamplingError, SamplingParams};

fn sampler(params: SamplingParams) -> Sampler {
    Sampler::new(params).expect("valid params")
}

/// Logits whose softmax at temperature 1 is exactly `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn ids(dist: &[(u32, f64)]) -> Vec<u32> {
    dist.iter().map(|&(id, _)| id).collect()
}

fn assert_probs(dist: &[(u32, f64)], expected: &[(u32, f64)]) {
    assert_eq!(ids(dist), ids(expected), "kept tokens: {dist:?}");
    for (&(id, p), &(_, q)) in dist.iter().zip(expected) {
        assert!((p - q).abs() < 1e-6, "token {id}: p {p} expected {q}");
    }
}

const PROBS: [f64; 5] = [0.1, 0.4, 0.05, 0.25, 0.2];

#[test]
fn default_is_greedy_and_valid() {
    let p = SamplingParams::default();
    p.validate().expect("default valid");
    let mut s = sampler(p);
    assert!(s.is_greedy());
    let mut logits = vec![0.5, 2.0, -1.0, 2.0];
    // Ties go to the lowest id, as the GPU argmax does.
    assert_eq!(s.sample(&mut logits, &[]), Ok(1));
    assert_eq!(argmax(&[f32::NAN, 1.0, 3.0, f32::NAN]), Some(2));
    assert_eq!(argmax(&[f32::NAN]), None);
}

#[test]
fn is_greedy_only_when_raw_argmax_suffices() {
    let greedy_k1 = SamplingParams { temperature: 0.8, top_k: 1, ..Default::default() };
    assert!(sampler(greedy_k1).is_greedy());
    let sampled = SamplingParams { temperature: 0.8, ..Default::default() };
    assert!(!sampler(sampled).is_greedy());
    let penalised = SamplingParams { repetition_penalty: 1.1, ..Default::default() };
    assert!(!sampler(penalised).is_greedy());
    let biased = SamplingParams { logit_bias: vec![(3, 1.0)], ..Default::default() };
    assert!(!sampler(biased).is_greedy());
}

#[test]
fn temperature_one_keeps_the_distribution() {
    let mut s = sampler(SamplingParams { temperature: 1.0, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_probs(&dist, &[(1, 0.4), (3, 0.25), (4, 0.2), (0, 0.1), (2, 0.05)]);
}

#[test]
fn temperature_sharpens_and_flattens() {
    // T = 0.5 squares the probabilities (then renormalises); T = 2 takes square roots.
    for (t, power) in [(0.5f32, 2.0f64), (2.0, 0.5)] {
        let mut s = sampler(SamplingParams { temperature: t, ..Default::default() });
        let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
        let z: f64 = PROBS.iter().map(|p| p.powf(power)).sum();
        for (id, p) in dist {
            let expected = PROBS[id as usize].powf(power) / z;
            assert!((p - expected).abs() < 1e-6, "T {t} token {id}: {p} vs {expected}");
        }
    }
}

#[test]
fn top_k_keeps_k_most_likely_renormalised() {
    let mut s = sampler(SamplingParams { temperature: 1.0, top_k: 2, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_probs(&dist, &[(1, 0.4 / 0.65), (3, 0.25 / 0.65)]);
}

#[test]
fn top_k_ties_go_to_lowest_id() {
    let mut s = sampler(SamplingParams { temperature: 1.0, top_k: 2, ..Default::default() });
    let dist = s.distribution(&mut [1.0, 3.0, 3.0, 3.0], &[]).expect("dist");
    assert_eq!(ids(&dist), vec![1, 2]);
}

#[test]
fn top_p_keeps_smallest_set_reaching_p() {
    // Sorted: 0.4, 0.25, 0.2, 0.1, 0.05. Cumulative 0.4, 0.65, 0.85, 0.95, 1.0.
    for (top_p, kept) in [
        (0.3f32, vec![1u32]),
        (0.5, vec![1, 3]),
        (0.6, vec![1, 3]),
        (0.7, vec![1, 3, 4]),
        (0.9, vec![1, 3, 4, 0]),
        (1.0, vec![1, 3, 4, 0, 2]),
    ] {
        let mut s = sampler(SamplingParams { temperature: 1.0, top_p, ..Default::default() });
        let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
        assert_eq!(ids(&dist), kept, "top_p {top_p}");
        let total: f64 = dist.iter().map(|&(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}

#[test]
fn top_p_tiny_keeps_one_token() {
    let mut s = sampler(SamplingParams { temperature: 1.0, top_p: 1e-6, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_probs(&dist, &[(1, 1.0)]);
}

#[test]
fn top_p_normalises_over_top_k_survivors() {
    // top_k 3 leaves 0.4, 0.25, 0.2 (sum 0.85): renormalised 0.47, 0.29, 0.24. top_p 0.7 then
    // needs the first two (0.76), while over the full vocabulary it would need three (0.85).
    let mut s = sampler(SamplingParams { temperature: 1.0, top_k: 3, top_p: 0.7, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_probs(&dist, &[(1, 0.4 / 0.65), (3, 0.25 / 0.65)]);
}

#[test]
fn min_p_is_relative_to_the_top_token() {
    // min_p 0.45 → threshold 0.18: keeps 0.4, 0.25, 0.2.
    let mut s = sampler(SamplingParams { temperature: 1.0, min_p: 0.45, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_probs(&dist, &[(1, 0.4 / 0.85), (3, 0.25 / 0.85), (4, 0.2 / 0.85)]);
    // min_p 0.7 → threshold 0.28: only the top token.
    let mut s = sampler(SamplingParams { temperature: 1.0, min_p: 0.7, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_probs(&dist, &[(1, 1.0)]);
}

#[test]
fn min_p_and_top_p_keep_the_shorter_prefix() {
    // top_p 0.9 alone keeps 4 tokens; min_p 0.45 keeps 3; together 3.
    let mut s = sampler(SamplingParams { temperature: 1.0, top_p: 0.9, min_p: 0.45, ..Default::default() });
    let dist = s.distribution(&mut logits_of(&PROBS), &[]).expect("dist");
    assert_eq!(ids(&dist), vec![1, 3, 4]);
}

#[test]
fn repetition_penalty_divides_positive_multiplies_negative() {
    let mut s = sampler(SamplingParams { repetition_penalty: 2.0, ..Default::default() });
    let mut logits = vec![3.0, -1.0, 0.5, 2.0];
    // Token 0 twice, token 1 once: each distinct token is penalised once (HF gathers/scatters).
    let chosen = s.sample(&mut logits, &[0, 1, 0]).expect("sample");
    assert_eq!(logits, vec![1.5, -2.0, 0.5, 2.0]);
    assert_eq!(chosen, 3, "greedy after the penalty");
}

#[test]
fn presence_and_frequency_penalties_follow_openai() {
    let mut s = sampler(SamplingParams { presence_penalty: 0.5, frequency_penalty: 0.25, ..Default::default() });
    let mut logits = vec![1.0, 1.0, 1.0, 1.0];
    s.sample(&mut logits, &[2, 2, 2, 0]).expect("sample");
    // mu[j] -= c[j] * 0.25 + (c[j] > 0) * 0.5
    assert_eq!(logits, vec![0.25, 1.0, -0.25, 1.0]);
}

#[test]
fn all_penalties_and_bias_compose_in_order() {
    let mut s = sampler(SamplingParams {
        logit_bias: vec![(0, 1.0), (2, -4.0)],
        repetition_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.1,
        ..Default::default()
    });
    let mut logits = vec![2.0, -1.0, 0.5, 3.0];
    s.sample(&mut logits, &[0, 1, 1, 3, 3, 3, 2]).expect("sample");
    // token 0: (2 + 1) / 2 - 0.1 - 0.5 = 0.9
    // token 1: -1 * 2 - 0.2 - 0.5 = -2.7
    // token 2: (0.5 - 4) * 2 - 0.1 - 0.5 = -7.6
    // token 3: 3 / 2 - 0.3 - 0.5 = 0.7
    let expected = [0.9f32, -2.7, -7.6, 0.7];
    for (i, (&got, &want)) in logits.iter().zip(&expected).enumerate() {
        assert!((got - want).abs() < 1e-6, "token {i}: {got} vs {want}");
    }
}

#[test]
fn penalty_last_n_limits_the_window() {
    let mut s = sampler(SamplingParams { presence_penalty: 1.0, penalty_last_n: Some(2), ..Default::default() });
    let mut logits = vec![0.0; 4];
    s.sample(&mut logits, &[0, 1, 2, 2]).expect("sample");
    assert_eq!(logits, vec![0.0, 0.0, -1.0, 0.0]);
}

#[test]
fn logit_bias_can_ban_a_token() {
    let mut s = sampler(SamplingParams {
        temperature: 1.0,
        logit_bias: vec![(1, f32::NEG_INFINITY)],
        seed: Some(7),
        ..Default::default()
    });
    for _ in 0..200 {
        let mut logits = logits_of(&PROBS);
        assert_ne!(s.sample(&mut logits, &[]).expect("sample"), 1);
    }
}

#[test]
fn same_seed_same_tokens() {
    let params = SamplingParams { temperature: 0.9, top_k: 40, top_p: 0.95, seed: Some(1234), ..Default::default() };
    let logits: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) * 0.05).collect();
    let run = |params: SamplingParams| -> Vec<u32> {
        let mut s = sampler(params);
        (0..100).map(|_| s.sample(&mut logits.clone(), &[]).expect("sample")).collect()
    };
    let a = run(params.clone());
    assert_eq!(a, run(params.clone()));
    let b = run(SamplingParams { seed: Some(1235), ..params });
    assert_ne!(a, b, "a different seed should give a different sequence");
}

#[test]
fn seed_none_uses_entropy_or_the_fixed_default() {
    let params = SamplingParams { temperature: 1.0, ..Default::default() };
    let logits: Vec<f32> = (0..1000).map(|i| ((i % 13) as f32) * 0.1).collect();
    let draw = |s: &mut Sampler| -> Vec<u32> {
        (0..50).map(|_| s.sample(&mut logits.clone(), &[]).expect("sample")).collect()
    };
    let mut d1 = sampler(params.clone());
    let mut d2 = sampler(params.clone());
    assert_eq!(draw(&mut d1), draw(&mut d2));
    let mut e1 = Sampler::with_entropy(params.clone(), 1).expect("valid");
    let mut e2 = Sampler::with_entropy(params, 2).expect("valid");
    assert_ne!(draw(&mut e1), draw(&mut e2));
}

#[test]
fn empirical_frequencies_within_three_sigma() {
    let probs = [0.5, 0.3, 0.2];
    let n = 20_000;
    let mut s = sampler(SamplingParams { temperature: 1.0, seed: Some(42), ..Default::default() });
    let mut counts = [0usize; 3];
    for _ in 0..n {
        let id = s.sample(&mut logits_of(&probs), &[]).expect("sample");
        counts[id as usize] += 1;
    }
    for (i, &p) in probs.iter().enumerate() {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        let c = counts[i] as f64;
        assert!((c - mean).abs() <= 3.0 * sigma, "token {i}: {c} draws, expected {mean} ± {}", 3.0 * sigma);
    }
}

#[test]
fn large_vocab_top_p_matches_a_full_sort() {
    // 150k vocabulary, flat-ish logits so the nucleus needs many growth rounds.
    let n = 150_000;
    let logits: Vec<f32> = (0..n).map(|i| ((i as u64 * 2_654_435_761 % 10_007) as f32) / 10_007.0 * 4.0).collect();
    let top_p = 0.5f32;
    let mut s = sampler(SamplingParams { temperature: 0.7, top_p, ..Default::default() });
    let dist = s.distribution(&mut logits.clone(), &[]).expect("dist");
    // Reference: full sort, f64 softmax at T = 0.7, smallest prefix reaching top_p.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let max = logits[order[0]] as f64;
    let w: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / 0.7).exp()).collect();
    let z: f64 = w.iter().sum();
    let mut cumulative = 0.0;
    let mut kept = 0;
    for &i in &order {
        cumulative += w[i] / z;
        kept += 1;
        if cumulative >= top_p as f64 {
            break;
        }
    }
    assert!(kept > 1000, "test should exercise many growth rounds, kept {kept}");
    let expected: Vec<u32> = order[..kept].iter().map(|&i| i as u32).collect();
    assert_eq!(ids(&dist), expected);
}

#[test]
fn validation_errors() {
    let bad = |p: SamplingParams| Sampler::new(p).map(|_| ()).unwrap_err();
    let d = SamplingParams::default;
    assert_eq!(bad(SamplingParams { temperature: -0.1, ..d() }), SamplingError::InvalidTemperature(-0.1));
    assert!(matches!(bad(SamplingParams { temperature: f32::NAN, ..d() }), SamplingError::InvalidTemperature(_)));
    assert!(matches!(bad(SamplingParams { temperature: f32::INFINITY, ..d() }), SamplingError::InvalidTemperature(_)));
    assert_eq!(bad(SamplingParams { top_p: 0.0, ..d() }), SamplingError::InvalidTopP(0.0));
    assert_eq!(bad(SamplingParams { top_p: 1.5, ..d() }), SamplingError::InvalidTopP(1.5));
    assert!(matches!(bad(SamplingParams { top_p: f32::NAN, ..d() }), SamplingError::InvalidTopP(_)));
    assert_eq!(bad(SamplingParams { min_p: -0.5, ..d() }), SamplingError::InvalidMinP(-0.5));
    assert_eq!(bad(SamplingParams { repetition_penalty: 0.0, ..d() }), SamplingError::InvalidRepetitionPenalty(0.0));
    assert!(matches!(
        bad(SamplingParams { presence_penalty: f32::NAN, ..d() }),
        SamplingError::InvalidPresencePenalty(_)
    ));
    assert!(matches!(
        bad(SamplingParams { frequency_penalty: f32::INFINITY, ..d() }),
        SamplingError::InvalidFrequencyPenalty(_)
    ));
    assert_eq!(
        bad(SamplingParams { logit_bias: vec![(3, f32::INFINITY)], ..d() }),
        SamplingError::InvalidLogitBias { token: 3, bias: f32::INFINITY }
    );
}

#[test]
fn runtime_errors() {
    let mut s = sampler(SamplingParams { temperature: 1.0, logit_bias: vec![(10, 1.0)], ..Default::default() });
    assert_eq!(s.sample(&mut [0.0; 4], &[]), Err(SamplingError::TokenOutOfRange { token: 10, vocab_size: 4 }));
    let mut s = sampler(SamplingParams { repetition_penalty: 1.2, ..Default::default() });
    assert_eq!(s.sample(&mut [0.0; 4], &[1, 9]), Err(SamplingError::TokenOutOfRange { token: 9, vocab_size: 4 }));
    assert_eq!(s.sample(&mut [], &[]), Err(SamplingError::EmptyLogits));
    let mut s = sampler(SamplingParams { temperature: 1.0, ..Default::default() });
    assert_eq!(s.sample(&mut [f32::NEG_INFINITY, f32::NAN], &[]), Err(SamplingError::NoCandidates { vocab_size: 2 }));
    assert_eq!(s.sample(&mut [0.0, f32::INFINITY], &[]), Err(SamplingError::InfiniteLogit { token: 1 }));
    // NaN tokens are never drawn, as in the GPU argmax.
    for _ in 0..100 {
        assert_eq!(s.sample(&mut [f32::NAN, 0.0, f32::NAN], &[]), Ok(1));
    }
}
