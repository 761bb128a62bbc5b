//! The GPU sampler against the CPU sampler (`webgpu_llm::sampling`, the reference): the same
//! candidate set on fresh random logits under every filter and penalty (ties, -inf and NaN
//! planted), the same draw for the same uniform number, the same distribution (a chi-square
//! goodness-of-fit over many draws), argmax at temperature 0, and errors as ids.
//! Tolerances: the GPU weighs candidates in f32 and the CPU in f64, so a cut or a draw may differ
//! only where the two sums straddle the boundary within ~1e-5 of the total.

mod common;
use common::*;
use webgpu_llm::ops::sample::{
    chosen, draw_uniform, philox4x32_10, sample, SampleOut, SampleState, INFINITE_FLAG, NO_CANDIDATE,
};
use webgpu_llm::ops::Pos;
use webgpu_llm::sampling::{Sampler, SamplingError, SamplingParams};
use webgpu_llm::Context;

struct GpuRun {
    ids: Vec<u32>,
    mask: Vec<u32>,
    logits: Vec<f32>,
}

/// Sample `rows` rows of `vocab` after a history `history` (its length counts the draw).
fn run(ctx: &Context, logits: &[f32], rows: u32, vocab: u32, params: &SamplingParams, history: &[u32]) -> GpuRun {
    run_allowed(ctx, logits, rows, vocab, params, history, None)
}

/// `run`, choosing only among the tokens whose bit is set in `allowed` when given.
fn run_allowed(
    ctx: &Context,
    logits: &[f32],
    rows: u32,
    vocab: u32,
    params: &SamplingParams,
    history: &[u32],
    allowed: Option<&[u32]>,
) -> GpuRun {
    let cap = history.len() as u32 + 4;
    let st = SampleState::new(ctx, rows, vocab, cap).unwrap();
    st.configure(ctx, params, 7, allowed.is_some()).unwrap();
    if let Some(bits) = allowed {
        st.set_allowed(ctx, bits).unwrap();
    }
    st.set_history(ctx, history).unwrap();
    let lb = upload_f32(ctx, logits);
    let ids = ctx.storage("ids", rows as u64 * 4).unwrap();
    let mask = ctx.storage("mask", rows as u64 * vocab as u64 * 4).unwrap();
    let len = history.len() as u32;
    let out = SampleOut { append: rows == 1, mask: Some(&mask) };
    let k = sample(ctx, &lb, &ids, rows, 1, Pos::At(len - 1), &st, out).unwrap();
    ctx.run(&[&k]);
    let n = (rows * vocab) as usize;
    GpuRun { ids: read_u32(ctx, &ids, rows as usize), mask: read_u32(ctx, &mask, n), logits: read_f32(ctx, &lb, n) }
}

fn random_params(rng: &mut Rng, vocab: u32) -> SamplingParams {
    let pick = |rng: &mut Rng, xs: &[f32]| xs[rng.below(xs.len() as u64) as usize];
    let mut p = SamplingParams {
        temperature: pick(rng, &[0.3, 0.7, 1.0, 1.6]),
        top_k: [0usize, 0, 2, 5, 40, 1000][rng.below(6) as usize],
        top_p: pick(rng, &[1.0, 1.0, 0.95, 0.8, 0.3]),
        min_p: pick(rng, &[0.0, 0.0, 0.02, 0.2]),
        seed: Some(rng.next_u64()),
        ..Default::default()
    };
    if rng.below(2) == 0 {
        p.repetition_penalty = pick(rng, &[1.3, 0.8]);
        p.presence_penalty = pick(rng, &[0.0, 0.5]);
        p.frequency_penalty = pick(rng, &[0.0, 0.3, -0.2]);
        p.penalty_last_n = [None, Some(8)][rng.below(2) as usize];
    }
    if rng.below(2) == 0 {
        for _ in 0..rng.below(6) + 1 {
            let t = rng.below(vocab as u64) as u32;
            if p.logit_bias.iter().all(|&(x, _)| x != t) {
                let b = if rng.below(4) == 0 { f32::NEG_INFINITY } else { rng.normal(4.0) };
                p.logit_bias.push((t, b));
            }
        }
    }
    p
}

fn random_logits(rng: &mut Rng, vocab: usize) -> Vec<f32> {
    let mut l: Vec<f32> = (0..vocab).map(|_| rng.normal(3.0)).collect();
    // ties: copies of the largest values and of values around the 40th, far apart in id
    let mut sorted = l.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    for &r in &[0usize, 1, 4, 39, 40] {
        let v = sorted[r.min(vocab - 1)];
        for _ in 0..rng.below(3) {
            l[rng.below(vocab as u64) as usize] = v;
        }
    }
    for _ in 0..rng.below(4) {
        let i = rng.below(vocab as u64) as usize;
        l[i] = if rng.below(2) == 0 { f32::NAN } else { f32::NEG_INFINITY };
    }
    l
}

/// The CPU's draw with uniform `u`: survivors in id order, f64 weights. Also the cumulative
/// mass (fraction of the total) at each survivor's end, to judge near-boundary differences.
fn cpu_draw(dist: &[(u32, f64)], u: f32) -> (u32, Vec<(u32, f64)>) {
    let mut by_id = dist.to_vec();
    by_id.sort_by_key(|&(id, _)| id);
    let mut cum = 0.0;
    let ends: Vec<(u32, f64)> = by_id
        .iter()
        .map(|&(id, p)| {
            cum += p;
            (id, cum)
        })
        .collect();
    let target = u as f64 * cum;
    let pick = ends.iter().find(|&&(_, c)| c > target).unwrap_or(ends.last().unwrap()).0;
    (pick, ends)
}

#[test]
fn philox_known_answers() {
    // Random123's kat_vectors for philox4x32_10
    assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(
        philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

#[test]
fn same_candidates_and_draw_as_the_cpu_sampler() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("sample_candidates"));
    let mut near_boundary = 0;
    for (case, &vocab) in [300u32, 300, 2049, 5000, 49152].iter().cycle().take(60).enumerate() {
        let params = random_params(&mut rng, vocab);
        let logits = random_logits(&mut rng, vocab as usize);
        let history: Vec<u32> = (0..30).map(|_| rng.below(vocab.min(40) as u64) as u32).collect();
        let gpu = run(ctx, &logits, 1, vocab, &params, &history);

        let mut cpu_logits = logits.clone();
        let mut sampler = Sampler::new(params.clone()).unwrap();
        let dist = sampler.distribution(&mut cpu_logits, &history).unwrap();
        let what = format!("case {case} vocab {vocab} {params:?}");
        // bias and penalties in place, as on the CPU
        for (i, (&g, &c)) in gpu.logits.iter().zip(&cpu_logits).enumerate() {
            let same = g == c || (g.is_nan() && c.is_nan()) || (g - c).abs() <= 1e-6 * c.abs().max(1.0);
            assert!(same, "{what}: logit {i} after bias/penalties {g} vs {c}");
        }
        let mut want: Vec<u32> = dist.iter().map(|&(id, _)| id).collect();
        want.sort_unstable();
        let got: Vec<u32> = (0..vocab).filter(|&i| gpu.mask[i as usize] == 1).collect();
        assert_eq!(got, want, "{what}: candidate set");
        // the draw, from the same uniform number
        let u = draw_uniform(params.seed.unwrap(), history.len() as u32, 0);
        let (pick, ends) = cpu_draw(&dist, u);
        if gpu.ids[0] != pick {
            let boundary = ends.iter().map(|&(_, c)| (c - u as f64 * ends.last().unwrap().1).abs()).fold(1.0, f64::min);
            assert!(boundary < 1e-5, "{what}: drew {} where the CPU draws {pick} (u {u})", gpu.ids[0]);
            near_boundary += 1;
        }
        assert!(want.binary_search(&gpu.ids[0]).is_ok(), "{what}: chose a non-candidate");
    }
    assert!(near_boundary <= 1, "{near_boundary} draws differed at a boundary");
}

/// Chi-square goodness of fit of `draws` GPU draws (one per row, each with its own counter) to
/// the CPU's distribution, at a false-alarm rate of 1e-4 (Wilson–Hilferty quantile).
fn fits(ctx: &Context, logits: &[f32], params: &SamplingParams, draws: u32) {
    let vocab = logits.len() as u32;
    let rows: Vec<f32> = (0..draws).flat_map(|_| logits.iter().copied()).collect();
    let gpu = run(ctx, &rows, draws, vocab, params, &[1, 2, 3]);
    let dist = Sampler::new(params.clone()).unwrap().distribution(&mut logits.to_vec(), &[1, 2, 3]).unwrap();
    let mut seen = vec![0u64; vocab as usize];
    for &id in &gpu.ids {
        seen[chosen(id, vocab).unwrap() as usize] += 1;
    }
    // bins expected to hold fewer than 5 draws are pooled (the chi-square approximation needs it)
    let (mut chi2, mut bins) = (0.0, 0usize);
    let (mut pool_e, mut pool_o) = (0.0, 0.0);
    for &(id, p) in &dist {
        let (e, o) = (p * draws as f64, seen[id as usize] as f64);
        seen[id as usize] = 0;
        if e < 5.0 {
            pool_e += e;
            pool_o += o;
            continue;
        }
        chi2 += (o - e) * (o - e) / e;
        bins += 1;
    }
    if pool_e > 0.0 {
        chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        bins += 1;
    }
    assert!(seen.iter().all(|&c| c == 0), "{params:?}: drew tokens outside the candidate set");
    let df = (bins - 1).max(1) as f64;
    let z = 3.719; // one-sided 1e-4
    let a = 2.0 / (9.0 * df);
    let critical = df * (1.0 - a + z * a.sqrt()).powi(3);
    assert!(chi2 < critical, "{params:?}: chi2 {chi2:.1} over {df} dof exceeds {critical:.1}");
}

#[test]
fn draws_follow_the_cpu_distribution() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("sample_fit"));
    let logits: Vec<f32> = (0..64).map(|_| rng.normal(1.5)).collect();
    let base = SamplingParams { seed: Some(rng.next_u64()), ..Default::default() };
    for p in [
        SamplingParams { temperature: 1.0, ..base.clone() },
        SamplingParams { temperature: 0.8, top_k: 20, top_p: 0.9, ..base.clone() },
        SamplingParams { temperature: 1.3, min_p: 0.05, ..base.clone() },
        SamplingParams { temperature: 0.7, repetition_penalty: 1.5, logit_bias: vec![(5, 2.0)], ..base.clone() },
    ] {
        fits(ctx, &logits, &p, 5_000);
    }
}

#[test]
fn temperature_zero_is_argmax_after_bias_and_penalties() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("sample_greedy"));
    for vocab in [7u32, 3000, 49152] {
        let logits = random_logits(&mut rng, vocab as usize);
        let history: Vec<u32> = (0..20).map(|_| rng.below(vocab as u64) as u32).collect();
        for params in [
            SamplingParams {
                temperature: 0.0,
                repetition_penalty: 2.0,
                logit_bias: vec![(3, 1.5)],
                ..Default::default()
            },
            SamplingParams { temperature: 0.9, top_k: 1, presence_penalty: 1.0, ..Default::default() },
            SamplingParams::default(),
        ] {
            let gpu = run(ctx, &logits, 1, vocab, &params, &history);
            let want = Sampler::new(params.clone()).unwrap().sample(&mut logits.clone(), &history).unwrap();
            assert_eq!(gpu.ids[0], want, "vocab {vocab} {params:?}");
            let mask: Vec<u32> = (0..vocab).filter(|&i| gpu.mask[i as usize] == 1).collect();
            assert_eq!(mask, [want]);
        }
    }
}

/// Constrained decoding's mask: the GPU's candidates are the CPU sampler's over the logits with
/// every disallowed token banned (a -inf bias, applied after bias and penalties as the kernel
/// does: -inf stays -inf through them), greedy included, down to a single allowed token.
#[test]
fn the_allowed_bitmask_restricts_the_candidates() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("sample_allowed"));
    for (case, &vocab) in [300u32, 2049, 5000, 151936].iter().cycle().take(24).enumerate() {
        let mut params = random_params(&mut rng, vocab);
        if case % 4 == 1 {
            params.temperature = 0.0;
        }
        let logits = random_logits(&mut rng, vocab as usize);
        let history: Vec<u32> = (0..12).map(|_| rng.below(vocab.min(40) as u64) as u32).collect();
        let density = [0.3, 0.01, 0.0][case % 3];
        let mut bits = vec![0u32; vocab.div_ceil(32) as usize];
        let mut ok: Vec<u32> = (0..vocab).filter(|_| (rng.uniform() as f64) < density).collect();
        if ok.is_empty() {
            ok.push(rng.below(vocab as u64) as u32); // exactly one token allowed
        }
        for &i in &ok {
            bits[i as usize / 32] |= 1 << (i % 32);
        }
        let gpu = run_allowed(ctx, &logits, 1, vocab, &params, &history, Some(&bits));
        let what = format!("case {case} vocab {vocab} allowed {}", ok.len());
        let mut banned = params.clone();
        banned.logit_bias.extend((0..vocab).filter(|i| ok.binary_search(i).is_err()).map(|i| (i, f32::NEG_INFINITY)));
        let mut cpu_logits = logits.clone();
        let got: Vec<u32> = (0..vocab).filter(|&i| gpu.mask[i as usize] == 1).collect();
        match Sampler::new(banned).unwrap().distribution(&mut cpu_logits, &history) {
            Ok(dist) if params.temperature == 0.0 || params.top_k == 1 => {
                assert_eq!(gpu.ids[0], dist[0].0, "{what}: greedy choice");
                assert!(ok.binary_search(&gpu.ids[0]).is_ok(), "{what}: chose a disallowed token");
            }
            Ok(dist) => {
                let mut want: Vec<u32> = dist.iter().map(|&(id, _)| id).collect();
                want.sort_unstable();
                assert_eq!(got, want, "{what}: candidate set");
                assert!(ok.binary_search(&gpu.ids[0]).is_ok(), "{what}: chose a disallowed token");
            }
            // every allowed token banned by the request's own bias, or NaN: no candidate
            Err(_) => assert!(chosen(gpu.ids[0], vocab).is_err(), "{what}: {:?}", gpu.ids[0]),
        }
    }
}

#[test]
fn errors_come_back_as_ids_and_the_draw_is_appended() {
    let ctx = ctx();
    let hot = SamplingParams { temperature: 1.0, ..Default::default() };
    let vocab = 1000;
    // every logit -inf (one NaN): no candidate
    let mut l = vec![f32::NEG_INFINITY; vocab];
    l[10] = f32::NAN;
    let gpu = run(ctx, &l, 1, vocab as u32, &hot, &[0]);
    assert_eq!(gpu.ids, [NO_CANDIDATE]);
    assert_eq!(chosen(gpu.ids[0], vocab as u32), Err(SamplingError::NoCandidates { vocab_size: vocab }));
    // +inf: an error naming the first such token when sampling, the argmax when greedy
    let mut l = vec![0.5f32; vocab];
    l[700] = f32::INFINITY;
    l[300] = f32::INFINITY;
    let gpu = run(ctx, &l, 1, vocab as u32, &hot, &[0]);
    assert_eq!(gpu.ids, [INFINITE_FLAG | 300]);
    assert_eq!(chosen(gpu.ids[0], vocab as u32), Err(SamplingError::InfiniteLogit { token: 300 }));
    assert_eq!(run(ctx, &l, 1, vocab as u32, &SamplingParams::default(), &[0]).ids, [300]);
    // and the CPU sampler agrees
    let e = Sampler::new(hot.clone()).unwrap().sample(&mut l.clone(), &[0]).unwrap_err();
    assert_eq!(e, SamplingError::InfiniteLogit { token: 300 });

    // the chosen id lands in the history after the row's tokens (pipelined decode's penalties)
    let st = SampleState::new(ctx, 1, vocab as u32, 16).unwrap();
    st.configure(ctx, &hot, 1, false).unwrap();
    st.set_history(ctx, &[1, 2, 3, 4]).unwrap();
    let mut rng = Rng::new(seed("sample_append"));
    let lb = upload_f32(ctx, &rng.vec(vocab, 3.0));
    let ids = ctx.storage("ids", 4).unwrap();
    let k = sample(ctx, &lb, &ids, 1, 2, Pos::At(2), &st, SampleOut { append: true, mask: None }).unwrap();
    ctx.run(&[&k]);
    let id = read_u32(ctx, &ids, 1)[0];
    assert!(id < vocab as u32);
    assert_eq!(read_u32(ctx, st.history(), 5), [1, 2, 3, 4, id]);
    // bad settings are refused before anything runs
    let too_many = SamplingParams { logit_bias: (0..1025).map(|t| (t, 1.0)).collect(), ..hot.clone() };
    let wide = SampleState::new(ctx, 1, 5000, 16).unwrap();
    assert!(matches!(wide.configure(ctx, &too_many, 1, false), Err(SamplingError::TooManyLogitBias { .. })));
    let out_of_range = SamplingParams { logit_bias: vec![(vocab as u32, 1.0)], ..hot.clone() };
    assert!(matches!(st.configure(ctx, &out_of_range, 1, false), Err(SamplingError::TokenOutOfRange { .. })));
}
