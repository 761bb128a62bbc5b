//! RoPE vs an f64 CPU reference written from Hugging Face transformers' formulas
//! (`modeling_rope_utils.py`, `apply_rotary_pos_emb`): inv_freq in f64 rounded to f32 (HF keeps it
//! as an f32 tensor), the angle as the f32 product f32(pos) · inv_freq (HF's f32 matmul of width 1,
//! the kernel does the same multiply), then cos/sin and the rotation in f64.
//! Tolerance: only the kernel's f32 cos/sin (range reduction + its own polynomial, since WGSL's
//! builtins promise just 2^-11 and SwiftShader's are off by 2e-4 — tests/browser_kernels.rs caught
//! that) and the rotation's rounding differ: a few ulp of |x| (worst seen on lavapipe 4.4e-7 for
//! |x| < 2). 2e-6 absolute is ~8 ulp of 2, while a wrong frequency, position, pairing or
//! reduction constant errs by 1e-4 to 1 (pos0 = 100 000 exercises the reduction). Dims past
//! rotary_dim must come back bit for bit.
//! One context only: RoPE has no feature-dependent path.

mod common;
use common::reference::{rope as reference, rope_f64, rope_mscale};
use common::*;
use webgpu_llm::ops::kv_write::{KvCacheShape, KvDtype};
use webgpu_llm::ops::rope::{rope, rope_kv, rope_rows, QkNorm, RopeConfig, RopePairing, RopeScaling, RopeTable};
use webgpu_llm::ops::{Pos, StepBuffer};

const ATOL: f64 = 2e-6;

/// HF's inverse frequencies for `cfg` at `context_len`, f64 then f32, written independently of
/// the library.
fn ref_inv_freq(cfg: &RopeConfig, context_len: u32) -> Vec<f32> {
    let dim = cfg.rotary_dim as usize;
    let default: Vec<f64> = (0..dim / 2).map(|i| 1.0 / cfg.theta.powf((2 * i) as f64 / dim as f64)).collect();
    let inv: Vec<f64> = match &cfg.scaling {
        RopeScaling::None => default,
        RopeScaling::Linear { factor } => default.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position } => {
            let old = *original_max_position as f64;
            default
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    // torch.where(wavelen > low_wavelen, f / factor, f), then the medium band smoothed
                    let scaled = if wavelen > old / lo { f / factor } else { f };
                    let smooth = (old / wavelen - lo) / (hi - lo);
                    let medium = wavelen >= old / hi && wavelen <= old / lo; // HF: ~(w < high) * ~(w > low)
                    if medium {
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect()
        }
        RopeScaling::LongRope { short_factor, long_factor, original_max_position, .. } => {
            let ext = if context_len > *original_max_position { long_factor } else { short_factor };
            (0..dim / 2).map(|i| 1.0 / (ext[i] as f64 * cfg.theta.powf((2 * i) as f64 / dim as f64))).collect()
        }
    };
    inv.iter().map(|&f| f as f32).collect()
}

/// Run `cfg` on random x[t, n_heads * head_dim] at pos0 and compare; returns the worst |error|.
fn check(rng: &mut Rng, what: &str, cfg: &RopeConfig, context_len: u32, n_heads: usize, t: usize, pos0: u32) -> f64 {
    let ctx = ctx();
    let hd = cfg.head_dim as usize;
    let x = rng.vec(t * n_heads * hd, 2.0);
    let inv = ref_inv_freq(cfg, context_len);
    assert_eq!(cfg.inv_freq(context_len).unwrap(), inv, "{what}: inverse frequencies differ from HF's formula");
    let want = reference(&x, cfg, &inv, rope_mscale(cfg), n_heads, t, pos0);
    let xb = upload_f32(ctx, &x);
    let table = RopeTable::new(ctx, cfg, context_len).unwrap();
    ctx.run(&[&rope(ctx, &xb, &table, n_heads as u32, t as u32, pos0).unwrap()]);
    let got = read_f32(ctx, &xb, x.len());
    let what = format!("{what} {:?} hd={hd} rd={} heads={n_heads} t={t} pos0={pos0}", cfg.pairing, cfg.rotary_dim);
    assert_close(&what, &got, &want, ATOL, 0.0);
    for (j, (&g, &v)) in got.iter().zip(&x).enumerate() {
        if j % hd >= cfg.rotary_dim as usize {
            assert_eq!(g.to_bits(), v.to_bits(), "{what}: pass-through element {j} changed");
        }
    }
    got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max)
}

#[test]
fn rope_matches_reference() {
    let mut rng = Rng::new(seed("rope"));
    let mut worst: f64 = 0.0;
    for pairing in [RopePairing::Half, RopePairing::Interleaved] {
        // (head_dim, rotary_dim, n_heads): SmolLM2 (64, 9 heads), Llama-3 (128, 32), partial rotary
        for &(hd, rd, heads) in &[(64u32, 64u32, 9usize), (128, 128, 32), (64, 32, 9), (128, 96, 32)] {
            let cfg = RopeConfig { rotary_dim: rd, ..RopeConfig::new(hd, 10000.0, pairing) };
            for &pos0 in &[0u32, 7, 300, 100_000] {
                let t = if pos0 == 7 { 1 } else { 5 }; // decode (one row) and prefill
                worst = worst.max(check(&mut rng, "plain", &cfg, 4096, heads, t, pos0));
            }
        }
    }
    eprintln!("rope: worst |error| {worst:.2e}");
}

#[test]
fn rope_scaled_frequencies() {
    let mut rng = Rng::new(seed("rope scaled"));
    // Llama-3.2's rope_scaling
    let llama = llama32();
    for &pos0 in &[0u32, 300, 100_000] {
        check(&mut rng, "llama3", &llama, 131072, 8, 3, pos0);
    }
    let linear =
        RopeConfig { scaling: RopeScaling::Linear { factor: 4.0 }, ..RopeConfig::new(64, 10000.0, RopePairing::Half) };
    check(&mut rng, "linear", &linear, 4096, 4, 3, 5000);
    // LongRoPE with Phi-3.5's shape (head_dim 96, 4096 → 131072) and made-up factors in [1, 40)
    let (short, long): (Vec<f32>, Vec<f32>) =
        (0..48).map(|_| (1.0 + rng.uniform().abs(), 1.0 + 39.0 * rng.uniform().abs())).unzip();
    let mut phi = RopeConfig {
        scaling: RopeScaling::LongRope {
            short_factor: short,
            long_factor: long,
            original_max_position: 4096,
            max_position: 131072,
            attention_factor: None,
        },
        ..RopeConfig::new(96, 10000.0, RopePairing::Half)
    };
    // ≈ 1.19024 for Phi-3.5: sqrt(1 + ln 32 / ln 4096)
    assert!((phi.attention_factor() - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-15);
    assert!(phi.inv_freq(4096).unwrap() != phi.inv_freq(4097).unwrap(), "long factors above 4096");
    for &(context_len, pos0) in &[(4096u32, 0u32), (4096, 4000), (131072, 0), (131072, 100_000)] {
        check(&mut rng, "longrope", &phi, context_len, 4, 3, pos0);
    }
    if let RopeScaling::LongRope { attention_factor, .. } = &mut phi.scaling {
        *attention_factor = Some(1.5);
    }
    check(&mut rng, "longrope given factor", &phi, 131072, 4, 2, 9000);
}

#[test]
fn rope_pins_known_frequencies() {
    // Values by hand: theta^(-2i/d), and Llama-3.2's llama3 table at its three bands (head_dim 64,
    // theta 500000: wavelen 2π·500000^(i/32) is < 2048 up to i = 14, > 8192 from i = 18).
    let plain = RopeConfig::new(64, 10000.0, RopePairing::Half).inv_freq(0).unwrap();
    assert_eq!(plain[0], 1.0);
    assert_eq!(plain[16], 0.01);
    let llama = llama32();
    let inv = llama.inv_freq(131072).unwrap();
    let base = |i: i32| 500000f64.powf(-(i as f64) / 32.0);
    assert_eq!(inv[14], base(14) as f32, "high frequency kept");
    assert_eq!(inv[31], (base(31) / 32.0) as f32, "low frequency / factor");
    let w = 2.0 * std::f64::consts::PI / base(16);
    let s = (8192.0 / w - 1.0) / 3.0;
    assert_eq!(inv[16], ((1.0 - s) * base(16) / 32.0 + s * base(16)) as f32, "medium band smoothed");
}

#[test]
fn rope_prefill_over_65535_workgroups() {
    // 2049 rows x 32 heads x 64 pairs = 65 568 workgroups: the grid folds into y.
    let mut rng = Rng::new(seed("rope big"));
    let cfg = RopeConfig::new(128, 500000.0, RopePairing::Half);
    check(&mut rng, "big", &cfg, 4096, 32, 2049, 0);
}

#[test]
fn rope_kernel_moves_to_new_position() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("rope pos"));
    let cfg = RopeConfig::new(64, 10000.0, RopePairing::Interleaved);
    let table = RopeTable::new(ctx, &cfg, 4096).unwrap();
    let x = rng.vec(2 * 64, 1.0);
    let xb = upload_f32(ctx, &x);
    // Built once at position 0, reading its position from a step buffer: run at 1234, then at 7
    // on the rotated result, without rebuilding.
    let step = StepBuffer::new(ctx);
    let k = rope(ctx, &xb, &table, 2, 1, Pos::Step { buf: &step, first: 0 }).unwrap();
    step.set(ctx, 1234);
    ctx.run(&[&k]);
    let inv = ref_inv_freq(&cfg, 4096);
    let want = reference(&x, &cfg, &inv, 1.0, 2, 1, 1234);
    let got = read_f32(ctx, &xb, x.len());
    assert_close("rope at step position 1234", &got, &want, ATOL, 0.0);
    step.set(ctx, 7);
    ctx.run(&[&k]);
    let want = reference(&got, &cfg, &inv, 1.0, 2, 1, 7);
    assert_close("rope at step position 7", &read_f32(ctx, &xb, x.len()), &want, ATOL, 0.0);
}

#[test]
fn rope_rejects_bad_shapes() {
    let ctx = ctx();
    let odd = RopeConfig { rotary_dim: 33, ..RopeConfig::new(64, 10000.0, RopePairing::Half) };
    assert!(RopeTable::new(ctx, &odd, 4096).is_err(), "odd rotary_dim");
    let long = RopeConfig {
        scaling: RopeScaling::LongRope {
            short_factor: vec![1.0; 47],
            long_factor: vec![1.0; 48],
            original_max_position: 4096,
            max_position: 131072,
            attention_factor: None,
        },
        ..RopeConfig::new(96, 10000.0, RopePairing::Half)
    };
    let err = RopeTable::new(ctx, &long, 4096).err().expect("47 short factors for 48 pairs");
    assert!(err.to_string().contains("short_factor"), "{err}");
    let table = RopeTable::new(ctx, &RopeConfig::new(64, 10000.0, RopePairing::Half), 4096).unwrap();
    let x = ctx.storage("x", 4 * 64 * 9 * 4).unwrap();
    let err = rope(ctx, &x, &table, 9, 5, 0).err().expect("x holds 4 rows, not 5");
    assert!(err.to_string().contains("`x`"), "{err}");
    assert!(rope(ctx, &x, &table, 9, 2, u32::MAX).is_err(), "positions overflow u32");
}

/// `rope_rows` on fused q|k|v rows (an encoder's): each row's q and k heads rotated at that row's
/// own position (a padded batch's r % seq, and arbitrary ones up to 100 000), v and the dims past
/// rotary_dim bit for bit unchanged.
#[test]
fn rope_rows_matches_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("rope_rows"));
    for pairing in [RopePairing::Half, RopePairing::Interleaved] {
        // (head_dim, rotary_dim, heads): nomic-embed (64, 12), a tiny one, partial rotary
        for &(hd, rd, heads) in &[(64u32, 64u32, 12usize), (16, 16, 4), (32, 16, 3)] {
            let cfg = RopeConfig { rotary_dim: rd, ..RopeConfig::new(hd, 1000.0, pairing) };
            let (hd, stride) = (hd as usize, 3 * heads * hd as usize);
            for padded in [true, false] {
                let t = 13;
                let pos: Vec<u32> =
                    (0..t).map(|r| if padded { (r % 5) as u32 } else { rng.below(100_001) as u32 }).collect();
                let x = rng.vec(t * stride, 2.0);
                let inv = cfg.inv_freq(4096).unwrap();
                let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                for (r, &p) in pos.iter().enumerate() {
                    rope_f64(&mut want[r * stride..r * stride + 2 * heads * hd], &cfg, &inv, 1.0, 2 * heads, 1, p);
                }
                let (xb, pb) = (upload_f32(ctx, &x), upload_u32(ctx, &pos));
                let table = RopeTable::new(ctx, &cfg, 4096).unwrap();
                let k = rope_rows(ctx, &xb, &table, 2 * heads as u32, t as u32, stride as u32, &pb).unwrap();
                ctx.run(&[&k]);
                let got = read_f32(ctx, &xb, x.len());
                let what = format!("rope_rows {pairing:?} hd={hd} rd={rd} heads={heads} padded={padded}");
                assert_close(&what, &got, &want, ATOL, 0.0);
                for (j, (&g, &v)) in got.iter().zip(&x).enumerate() {
                    let col = j % stride;
                    if col >= 2 * heads * hd || col % hd >= rd as usize {
                        assert_eq!(g.to_bits(), v.to_bits(), "{what}: element {j} (v or pass-through) changed");
                    }
                }
            }
        }
    }
    let table = RopeTable::new(ctx, &RopeConfig::new(16, 1000.0, RopePairing::Half), 4096).unwrap();
    let (x, pos) = (ctx.storage("x", 4 * 48 * 3).unwrap(), ctx.storage("pos", 4 * 3).unwrap());
    assert!(rope_rows(ctx, &x, &table, 2, 4, 48, &pos).is_err(), "x and positions hold 3 rows, not 4");
    assert!(rope_rows(ctx, &x, &table, 2, 3, 48, &pos).is_ok());
    assert!(rope_rows(ctx, &x, &table, 2, 3, 60, &pos).is_err(), "rows of 60 overrun x");
    assert!(rope_rows(ctx, &x, &table, 3, 1, 48, &pos).is_ok());
    assert!(rope_rows(ctx, &x, &table, 4, 1, 48, &pos).is_err(), "4 heads of 16 do not fit rows of 48");
}

/// Llama-3.2's RoPE: theta 500000 with its llama3 `rope_scaling`, head_dim 64.
fn llama32() -> RopeConfig {
    RopeConfig {
        scaling: RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        },
        ..RopeConfig::new(64, 500000.0, RopePairing::Half)
    }
}

/// rope_kv, decode's one kernel between the q|k|v projection and attention, against the f64
/// reference: q heads (per-head RMS-normed first when asked, Qwen3) rotated (or not: a NoPE layer,
/// `rotary` 0 here) into q_out; k heads
/// the same and v heads as they are, into cache positions pos0..pos0 + t as f32 words or f16
/// pairs; every other cache word untouched. Full and partial rotary, both pairings.
/// Tolerance: as rope's (ATOL) plus the norm's few f32 roundings (1e-5 relative); f16 words hold
/// values to 2⁻¹¹ relative, so k in an f16 cache gets 1e-3; v is compared word for word.
#[test]
fn rope_kv_matches_reference() {
    let mut rng = Rng::new(seed("rope_kv"));
    let (n_heads, n_kv, hd, t, pos0, capacity) = (6usize, 2usize, 32usize, 3usize, 5u32, 10u32);
    let (q_dim, kv_dim) = (n_heads * hd, n_kv * hd);
    let stride = q_dim + 2 * kv_dim;
    let eps = 1e-6f32;
    for (name, ctx) in contexts() {
        for (pairing, rotary) in
            [(RopePairing::Half, 32), (RopePairing::Interleaved, 32), (RopePairing::Half, 24), (RopePairing::Half, 0)]
        {
            let rotate = rotary > 0;
            for dtype in [KvDtype::F32, KvDtype::F16] {
                for norm in [false, true] {
                    let what = format!("rope_kv {name} {pairing:?} rotary={rotary} {dtype:?} norm={norm}");
                    let rotary_dim = if rotate { rotary } else { hd as u32 };
                    let cfg = RopeConfig { rotary_dim, ..RopeConfig::new(hd as u32, 10000.0, pairing) };
                    let table = RopeTable::new(ctx, &cfg, 4096).unwrap();
                    let inv = ref_inv_freq(&cfg, 4096);
                    let qkv = rng.vec(t * stride, 2.0);
                    let (qn, kn) = (rng.vec(hd, 0.2), rng.vec(hd, 0.2));
                    let shape =
                        KvCacheShape { n_kv_heads: n_kv as u32, head_dim: hd as u32, capacity, dtype, ring: false };
                    let words = (shape.bytes() / 4) as usize;
                    let old: Vec<u32> = (0..2 * words).map(|_| rng.next_u64() as u32).collect();
                    let (ck, cv) = (upload_u32(ctx, &old[..words]), upload_u32(ctx, &old[words..]));
                    let (qkv_b, q_out) = (upload_f32(ctx, &qkv), upload_f32(ctx, &vec![f32::NAN; t * q_dim]));
                    let (qn_b, kn_b) = (upload_f32(ctx, &qn), upload_f32(ctx, &kn));
                    let qk = norm.then_some(QkNorm { q: &qn_b, k: &kn_b, eps });
                    let k = rope_kv(
                        ctx,
                        &qkv_b,
                        &q_out,
                        &ck,
                        &cv,
                        &table,
                        rotate,
                        n_heads as u32,
                        &shape,
                        t as u32,
                        pos0,
                        qk,
                    )
                    .unwrap();
                    ctx.run(&[&k]);

                    // The reference: each head normed (optionally), then rotated at its row's position.
                    let head = |row: usize, col: usize, w: &[f32]| -> Vec<f64> {
                        let mut x: Vec<f64> = qkv[row * stride + col..][..hd].iter().map(|&v| v as f64).collect();
                        if norm {
                            let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / hd as f64 + eps as f64).sqrt();
                            x.iter_mut().zip(w).for_each(|(v, &g)| *v *= r * g as f64);
                        }
                        if rotate {
                            rope_f64(&mut x, &cfg, &inv, 1.0, 1, 1, pos0 + row as u32);
                        }
                        x
                    };
                    let mut want_q = Vec::new();
                    for r in 0..t {
                        for h in 0..n_heads {
                            want_q.extend(head(r, h * hd, &qn));
                        }
                    }
                    assert_close(&format!("{what}: q"), &read_f32(ctx, &q_out, t * q_dim), &want_q, 1e-5, 1e-5);

                    let (got_k, got_v) = (read_u32(ctx, &ck, words), read_u32(ctx, &cv, words));
                    let rw = shape.row_words() as usize;
                    let mut want_v = old[words..].to_vec();
                    let mut seen_k = vec![false; words];
                    for row in 0..t {
                        for h in 0..n_kv {
                            let at = (h * capacity as usize + pos0 as usize + row) * rw;
                            let kh = head(row, q_dim + h * hd, &kn);
                            let got: Vec<f32> = match dtype {
                                KvDtype::F32 => got_k[at..at + rw].iter().map(|&w| f32::from_bits(w)).collect(),
                                KvDtype::F16 => got_k[at..at + rw]
                                    .iter()
                                    .flat_map(|&w| {
                                        [
                                            half::f16::from_bits(w as u16).to_f32(),
                                            half::f16::from_bits((w >> 16) as u16).to_f32(),
                                        ]
                                    })
                                    .collect(),
                            };
                            let (atol, rtol) = if dtype == KvDtype::F16 { (1e-3, 1e-3) } else { (1e-5, 1e-5) };
                            assert_close(&format!("{what}: k row {row} head {h}"), &got, &kh, atol, rtol);
                            seen_k[at..at + rw].iter_mut().for_each(|s| *s = true);
                            let v = &qkv[row * stride + q_dim + kv_dim + h * hd..][..hd];
                            let vw: Vec<u32> = match dtype {
                                KvDtype::F32 => v.iter().map(|x| x.to_bits()).collect(),
                                KvDtype::F16 => v
                                    .chunks(2)
                                    .map(|c| {
                                        half::f16::from_f32(c[0]).to_bits() as u32
                                            | (half::f16::from_f32(c[1]).to_bits() as u32) << 16
                                    })
                                    .collect(),
                            };
                            want_v[at..at + rw].copy_from_slice(&vw);
                        }
                    }
                    assert_eq!(got_v, want_v, "{what}: v cache words");
                    for (i, (&g, &o)) in got_k.iter().zip(&old[..words]).enumerate() {
                        assert!(seen_k[i] || g == o, "{what}: k cache word {i} outside the written rows changed");
                    }
                }
            }
        }
    }
}
