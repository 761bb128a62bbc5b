//! Causal GQA attention over a KV cache vs an f64 CPU reference.
//!
//! The reference uses exactly the K/V values the cache holds (f16 caches: the inputs rounded
//! through `half::f16`), so f16 storage is not counted as kernel error and one tolerance serves
//! both dtypes. Tolerance 3e-5 absolute + 3e-5 relative: the output is a convex combination of V
//! values (|v| < 4), so it is off by about (relative error of the softmax weights)·|v|. Scores are
//! f32 dots of ≤ 256 terms (base-2 logits up to ~±30); their rounding is a random walk of
//! ~sqrt(256)·2⁻²⁴·|partial sum| ≈ 2e-6, and WGSL allows exp2 3 + 2|x| ulp (≤ ~4e-6 relative
//! for |x| ≤ 30), so ~1e-5 is the most a conforming device should show; lavapipe's worst over
//! many seeds is ≈ 5e-6. A wrong mask, scale, head mapping, rescale or split merge gives errors
//! of 1e-2 and more (each was tried by breaking the shader).
//!
//! Cache positions at and beyond pos0 + t hold NaN words (in both f16 halves too): any read of
//! them makes the output NaN, which `assert_close` rejects; positions pos0 + i + 1 .. pos0 + t hold
//! real keys of later rows, so a missing causal mask inside the block shows as a mismatch.

mod common;
use common::reference::attention as reference;
use common::*;
use webgpu_llm::ops::attention::{attention, AttentionScratch, AttentionShape, KvCacheShape, KvDtype};
use webgpu_llm::ops::kv_write::kv_write;
use webgpu_llm::Context;

const ATOL: f64 = 3e-5;
const RTOL: f64 = 3e-5;
const POISON: u32 = 0xFFFF_FFFF; // NaN as f32 and as both f16 halves

/// The value the cache holds for `x`.
fn held(x: f32, dtype: KvDtype) -> f64 {
    match dtype {
        KvDtype::F32 => x as f64,
        KvDtype::F16 => half::f16::from_f32(x).to_f64(),
    }
}

/// Cache words of `[n_kv, capacity, head_dim]` with rows `[pos, n_kv * head_dim]` for pos < rows.len() / kv_dim.
fn cache_words(rows: &[f32], s: &KvCacheShape) -> Vec<u32> {
    let (hd, kv_dim, rw) = (s.head_dim as usize, s.kv_dim() as usize, s.row_words() as usize);
    let mut w = vec![POISON; (s.bytes() / 4) as usize];
    for pos in 0..rows.len() / kv_dim {
        for h in 0..s.n_kv_heads as usize {
            let src = &rows[pos * kv_dim + h * hd..][..hd];
            let dst = (h * s.capacity as usize + pos) * rw;
            for i in 0..rw {
                w[dst + i] = match s.dtype {
                    KvDtype::F32 => src[i].to_bits(),
                    KvDtype::F16 => {
                        half::f16::from_f32(src[2 * i]).to_bits() as u32
                            | (half::f16::from_f32(src[2 * i + 1]).to_bits() as u32) << 16
                    }
                };
            }
        }
    }
    w
}

struct Case {
    n_heads: u32,
    n_kv: u32,
    head_dim: u32,
    dtype: KvDtype,
    pos0: u32,
    t: u32,
    splits: Option<u32>,
    /// Fill the cache with kv_write (true) or by uploading its words (false).
    via_kv_write: bool,
    scale: Option<f32>,
    window: u32,
    softcap: f32,
}

/// Run one case; returns the worst |got - want|.
fn run_case(ctx: &Context, name: &str, rng: &mut Rng, c: &Case, scratch: &AttentionScratch) -> f64 {
    let capacity = c.pos0 + c.t + 3; // room beyond the last key, poisoned
    let kv = KvCacheShape { n_kv_heads: c.n_kv, head_dim: c.head_dim, capacity, dtype: c.dtype, ring: false };
    let mut shape = AttentionShape::new(c.n_heads, kv);
    if let Some(s) = c.scale {
        shape.scale = s;
    }
    shape.window = c.window;
    shape.softcap = c.softcap;
    let (kv_dim, n_pos) = (kv.kv_dim() as usize, (c.pos0 + c.t) as usize);
    let q_len = (c.t * c.n_heads * c.head_dim) as usize;
    // q wider than k so scores spread over ~±10 and the softmax is far from uniform.
    let q: Vec<f32> = (0..q_len).map(|_| rng.normal(2.5)).collect();
    let k_rows: Vec<f32> = (0..n_pos * kv_dim).map(|_| rng.normal(1.0)).collect();
    let v_rows: Vec<f32> = (0..n_pos * kv_dim).map(|_| rng.normal(1.0)).collect();

    let (ck, cv) = if c.via_kv_write {
        let poison = vec![POISON; (kv.bytes() / 4) as usize];
        let (ck, cv) = (upload_u32(ctx, &poison), upload_u32(ctx, &poison));
        // As a model does: the cached prefix in one write, then this step's rows.
        let mut writes = Vec::new();
        for (p0, n) in [(0, c.pos0), (c.pos0, c.t)] {
            if n > 0 {
                let r = p0 as usize * kv_dim..(p0 + n) as usize * kv_dim;
                let (kb, vb) = (upload_f32(ctx, &k_rows[r.clone()]), upload_f32(ctx, &v_rows[r]));
                writes.push(kv_write(ctx, &kb, &vb, &ck, &cv, &kv, p0, n).unwrap());
            }
        }
        ctx.run(&writes.iter().collect::<Vec<_>>());
        (ck, cv)
    } else {
        (upload_u32(ctx, &cache_words(&k_rows, &kv)), upload_u32(ctx, &cache_words(&v_rows, &kv)))
    };

    let qb = upload_f32(ctx, &q);
    let out = upload_u32(ctx, &vec![POISON; q_len]); // unwritten outputs stay NaN
    let kernels = attention(ctx, &qb, &ck, &cv, &out, &shape, c.pos0, c.t, scratch, c.splits).unwrap();
    ctx.run(&kernels.iter().collect::<Vec<_>>());
    let got = read_f32(ctx, &out, q_len);

    let k_held: Vec<f64> = k_rows.iter().map(|&x| held(x, c.dtype)).collect();
    let v_held: Vec<f64> = v_rows.iter().map(|&x| held(x, c.dtype)).collect();
    let (nh, nkv, hd) = (c.n_heads as usize, c.n_kv as usize, c.head_dim as usize);
    let q64: Vec<f64> = q.iter().map(|&x| x as f64).collect();
    let (pos0, t, scale, window) = (c.pos0 as usize, c.t as usize, shape.scale as f64, c.window as usize);
    let want = reference(&q64, &k_held, &v_held, nh, nkv, hd, pos0, t, scale, window, c.softcap as f64);
    let what = format!(
        "attention {name} {}/{} hd={} {:?} pos0={} t={} splits={:?} window={} softcap={} (ran {}) kv_write={}",
        c.n_heads,
        c.n_kv,
        c.head_dim,
        c.dtype,
        c.pos0,
        c.t,
        c.splits,
        c.window,
        c.softcap,
        if kernels.len() > 1 { "split+combine" } else { "one pass" },
        c.via_kv_write
    );
    assert_close(&what, &got, &want, ATOL, RTOL);
    got.iter().zip(&want).map(|(&g, w)| (g as f64 - w).abs()).fold(0.0, f64::max)
}

const HEADS: [(u32, u32, u32); 3] = [(9, 3, 64), (32, 8, 128), (4, 4, 128)];

#[test]
fn attention_decode_matches_reference() {
    let mut rng = Rng::new(seed("attention_decode"));
    let ctx = ctx();
    let mut worst = 0.0f64;
    let mut n = 0;
    for &(n_heads, n_kv, head_dim) in &HEADS {
        let scratch = AttentionScratch::new(ctx, 37, n_heads, head_dim, 8).unwrap();
        for keys in [1u32, 7, 300] {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                for splits in [Some(1), Some(3), Some(7), None] {
                    n += 1;
                    let c = Case {
                        n_heads,
                        n_kv,
                        head_dim,
                        dtype,
                        pos0: keys - 1,
                        t: 1,
                        splits,
                        via_kv_write: n % 2 == 0,
                        scale: None,
                        window: 0,
                        softcap: 0.0,
                    };
                    worst = worst.max(run_case(ctx, "decode", &mut rng, &c, &scratch));
                }
            }
        }
    }
    eprintln!("decode: worst |diff| {worst:.2e}");
}

#[test]
fn attention_prefill_matches_reference() {
    let mut rng = Rng::new(seed("attention_prefill"));
    let ctx = ctx();
    let mut worst = 0.0f64;
    let mut n = 0;
    for &(n_heads, n_kv, head_dim) in &HEADS {
        let scratch = AttentionScratch::new(ctx, 37, n_heads, head_dim, 8).unwrap();
        // (pos0, t): a cached prefix then a block of new rows; 7 and 300 keys in all; no prefix.
        for (pos0, t) in [(2u32, 5u32), (6, 1), (263, 37), (295, 5), (0, 37)] {
            for dtype in [KvDtype::F32, KvDtype::F16] {
                // Forced 7 splits leaves the early rows of a short block with empty splits.
                for splits in [None, Some(7)] {
                    n += 1;
                    let via_kv_write = n % 2 == 1;
                    let (scale, window, softcap) = (None, 0, 0.0);
                    let c =
                        Case { n_heads, n_kv, head_dim, dtype, pos0, t, splits, via_kv_write, scale, window, softcap };
                    worst = worst.max(run_case(ctx, "prefill", &mut rng, &c, &scratch));
                }
            }
        }
    }
    eprintln!("prefill: worst |diff| {worst:.2e}");
}

/// The path every browser has (no shader-f16 on the device), a custom scale and an odd f32 head_dim.
#[test]
fn attention_portable_and_odd_shapes() {
    let mut rng = Rng::new(seed("attention_portable"));
    for (name, ctx) in contexts() {
        for &(n_heads, n_kv, head_dim, dtype) in
            &[(9u32, 3u32, 64u32, KvDtype::F16), (6, 2, 37, KvDtype::F32), (2, 1, 256, KvDtype::F16)]
        {
            let scratch = AttentionScratch::new(ctx, 5, n_heads, head_dim, 4).unwrap();
            for (pos0, t, splits) in [(299u32, 1u32, None), (70, 5, Some(4)), (3, 5, Some(1))] {
                let c = Case {
                    n_heads,
                    n_kv,
                    head_dim,
                    dtype,
                    pos0,
                    t,
                    splits,
                    via_kv_write: pos0 % 2 == 0,
                    scale: Some(0.3),
                    window: 0,
                    softcap: 0.0,
                };
                run_case(ctx, name, &mut rng, &c, &scratch);
            }
        }
    }
}

/// Gemma's local layers and Gemma 2's capped scores: windows shorter and longer than the keys,
/// decode and prefill blocks that start inside and before the window, with splits that begin
/// before some rows' windows (those splits are empty for them), and caps that bend the scores
/// (|scaled score| up to ~10 against caps of 2 and 5). Scores past the window hold real keys, so
/// a window off by one shows.
#[test]
fn attention_sliding_window_and_softcap() {
    let mut rng = Rng::new(seed("attention_window"));
    for (name, ctx) in contexts() {
        let (n_heads, n_kv, head_dim) = (4u32, 2u32, 64u32);
        let scratch = AttentionScratch::new(ctx, 40, n_heads, head_dim, 8).unwrap();
        let mut n = 0;
        for (window, softcap) in [(8u32, 0.0f32), (1, 0.0), (300, 0.0), (0, 2.0), (5, 5.0)] {
            for (pos0, t) in [(0u32, 1u32), (30, 1), (299, 1), (0, 37), (20, 13), (263, 37)] {
                for splits in [None, Some(3)] {
                    {
                        n += 1;
                        // dtype and cache filling alternate over the grid (each case on both would double it)
                        let dtype = if n % 2 == 0 { KvDtype::F16 } else { KvDtype::F32 };
                        let via_kv_write = n % 4 < 2;
                        let c = Case {
                            n_heads,
                            n_kv,
                            head_dim,
                            dtype,
                            pos0,
                            t,
                            splits,
                            via_kv_write,
                            scale: None,
                            window,
                            softcap,
                        };
                        run_case(ctx, name, &mut rng, &c, &scratch);
                    }
                }
            }
        }
    }
}

#[test]
fn attention_auto_splits_long_decode() {
    let ctx = ctx();
    let kv = KvCacheShape { n_kv_heads: 8, head_dim: 128, capacity: 4096, dtype: KvDtype::F16, ring: false };
    let shape = AttentionShape::new(32, kv);
    let scratch = AttentionScratch::new(ctx, 1, 32, 128, 16).unwrap();
    use webgpu_llm::ops::attention::auto_splits;
    assert_eq!(auto_splits(&shape, 0, 1, &scratch), 1);
    assert_eq!(auto_splits(&shape, 299, 1, &scratch), 2);
    assert_eq!(auto_splits(&shape, 4095, 1, &scratch), 16);
    assert_eq!(auto_splits(&shape, 100, 37, &scratch), 1, "rows beyond the scratch: no split");
}

/// `max_split_rows`: the most rows `auto_splits` splits, so a scratch sized to it (`State`'s) picks
/// the same splits as one with room for every row; one row more is never split.
#[test]
fn attention_max_split_rows_bounds_auto_splits() {
    use webgpu_llm::ops::attention::{auto_splits, max_split_rows};
    let ctx = ctx();
    let wide = AttentionScratch::new(ctx, 1100, 1, 4, 32).unwrap();
    for n_heads in [1, 2, 3, 9, 16, 32, 64, 1024, 2000] {
        let kv = KvCacheShape { n_kv_heads: 1, head_dim: 4, capacity: 1 << 20, dtype: KvDtype::F32, ring: false };
        let shape = AttentionShape::new(n_heads, kv);
        let rows = max_split_rows(n_heads);
        if n_heads < 1024 {
            assert!(auto_splits(&shape, 8000, rows, &wide) > 1, "{n_heads} heads: {rows} rows split");
        }
        assert_eq!(auto_splits(&shape, 8000, rows + 1, &wide), 1, "{n_heads} heads: {} rows", rows + 1);
    }
}

#[test]
fn attention_rejects_bad_arguments() {
    let ctx = ctx();
    let kv = KvCacheShape { n_kv_heads: 3, head_dim: 64, capacity: 16, dtype: KvDtype::F16, ring: false };
    let buf = |elems: u64| ctx.storage("buf", elems * 4).unwrap();
    let (q, out) = (buf(4 * 12 * 64), buf(4 * 12 * 64));
    let (ck, cv) = (ctx.storage("ck", kv.bytes()).unwrap(), ctx.storage("cv", kv.bytes()).unwrap());
    let scratch = AttentionScratch::new(ctx, 4, 12, 64, 4).unwrap();
    let run =
        |shape: &AttentionShape, pos0, t, splits| attention(ctx, &q, &ck, &cv, &out, shape, pos0, t, &scratch, splits);

    run(&AttentionShape::new(12, kv), 12, 4, None).expect("12 + 4 = capacity fits");
    let err = run(&AttentionShape::new(10, kv), 0, 1, None).err().expect("10 heads over 3 kv heads");
    assert!(err.to_string().contains("n_kv_heads"), "{err}");
    let err = run(&AttentionShape::new(12, kv), 13, 4, None).err().expect("13 + 4 > capacity");
    assert!(err.to_string().contains("capacity"), "{err}");
    let odd = KvCacheShape { head_dim: 63, ..kv };
    let err = run(&AttentionShape::new(12, odd), 0, 1, None).err().expect("odd head_dim in f16");
    assert!(err.to_string().contains("even"), "{err}");
    let wide = KvCacheShape { head_dim: 258, capacity: 1, ..kv };
    let err = run(&AttentionShape::new(3, wide), 0, 1, None).err().expect("head_dim > 256");
    assert!(err.to_string().contains("head_dim"), "{err}");
    let err = run(&AttentionShape::new(12, kv), 0, 1, Some(5)).err().expect("5 splits > scratch's 4");
    assert!(err.to_string().contains("scratch"), "{err}");
    let err = run(&AttentionShape::new(12, kv), 0, 1, Some(0)).err().expect("0 splits");
    assert!(err.to_string().contains("splits"), "{err}");
    let err = run(&AttentionShape::new(12, kv), 0, 5, None).err().expect("q holds 4 rows");
    assert!(err.to_string().contains("`q`"), "{err}");
    let err =
        attention(ctx, &q, &ck, &cv, &q, &AttentionShape::new(12, kv), 0, 1, &scratch, None).err().expect("q = out");
    assert!(err.to_string().contains("different"), "{err}");
}

/// `attend_row` (CPU-emulated GPUs) does `attend`'s arithmetic in `attend`'s order: on one device the
/// two give the same bits, one pass and split, f32 and f16 caches, decode and prefill rows. (This is
/// what keeps tokens equal across the two strategies and between the native and browser engines.)
#[test]
fn attend_row_gives_attends_bits() {
    let mut rng = Rng::new(seed("attend_row bits"));
    let opts = |row| webgpu_llm::ContextOptions { row_gemv: Some(row), ..Default::default() };
    let (rows, reduce) = (Context::new_blocking(opts(true)).unwrap(), Context::new_blocking(opts(false)).unwrap());
    for dtype in [KvDtype::F32, KvDtype::F16] {
        for (pos0, t, splits) in [(299u32, 1u32, Some(1u32)), (299, 1, Some(3)), (40, 5, None)] {
            let (n_heads, n_kv, head_dim) = (8u32, 2u32, 128u32);
            let kv = KvCacheShape { n_kv_heads: n_kv, head_dim, capacity: pos0 + t, dtype, ring: false };
            let shape = AttentionShape::new(n_heads, kv);
            let q: Vec<f32> = (0..(t * n_heads * head_dim) as usize).map(|_| rng.normal(2.5)).collect();
            let rows_kv: Vec<f32> = (0..((pos0 + t) * kv.kv_dim()) as usize).map(|_| rng.normal(1.0)).collect();
            let words = cache_words(&rows_kv, &kv);
            let mut outs = Vec::new();
            for ctx in [&rows, &reduce] {
                let scratch = AttentionScratch::new(ctx, t, n_heads, head_dim, 8).unwrap();
                let (qb, ck, cv) = (upload_f32(ctx, &q), upload_u32(ctx, &words), upload_u32(ctx, &words));
                let out = upload_u32(ctx, &vec![POISON; q.len()]);
                let k = attention(ctx, &qb, &ck, &cv, &out, &shape, pos0, t, &scratch, splits).unwrap();
                ctx.run(&k.iter().collect::<Vec<_>>());
                outs.push(read_u32(ctx, &out, q.len()));
            }
            assert_eq!(outs[0], outs[1], "{dtype:?} pos0={pos0} t={t} splits={splits:?}: attend_row vs attend");
        }
    }
}

/// A ring cache (Gemma's sliding layers: slot = position mod capacity) written as a model writes
/// it — the sequence in steps of at most `t` rows, wrapping the ring several times — gives the
/// windowed attention of a full cache, with the smallest ring that serves the step (window + t − 1
/// slots) and a larger one, one pass and split, f32 and f16, on both kernel variants.
#[test]
fn ring_cache_attends_like_a_full_one() {
    let mut rng = Rng::new(seed("attention ring"));
    let opts = |row| webgpu_llm::ContextOptions { row_gemv: Some(row), ..Default::default() };
    for row in [true, false] {
        let ctx = &Context::new_blocking(opts(row)).unwrap();
        let scratch = AttentionScratch::new(ctx, 8, 8, 64, 4).unwrap();
        for (dtype, window, t, extra, pos0, splits) in [
            (KvDtype::F32, 5u32, 1u32, 0u32, 40u32, None),
            (KvDtype::F16, 7, 4, 0, 53, Some(3u32)),
            (KvDtype::F32, 16, 8, 3, 70, None),
            (KvDtype::F16, 3, 8, 0, 29, Some(2)),
        ] {
            let (n_heads, n_kv, head_dim) = (8u32, 2u32, 64u32);
            let capacity = window + t - 1 + extra;
            let kv = KvCacheShape { n_kv_heads: n_kv, head_dim, capacity, dtype, ring: true };
            let shape = AttentionShape { window, ..AttentionShape::new(n_heads, kv) };
            let (kv_dim, n_pos) = (kv.kv_dim() as usize, (pos0 + t) as usize);
            let q: Vec<f32> = (0..(t * n_heads * head_dim) as usize).map(|_| rng.normal(2.5)).collect();
            let k_rows: Vec<f32> = (0..n_pos * kv_dim).map(|_| rng.normal(1.0)).collect();
            let v_rows: Vec<f32> = (0..n_pos * kv_dim).map(|_| rng.normal(1.0)).collect();
            let poison = vec![POISON; (kv.bytes() / 4) as usize];
            let (ck, cv) = (upload_u32(ctx, &poison), upload_u32(ctx, &poison));
            // the prefix in steps of t rows (the last one short), then this step's rows
            let mut p0 = 0;
            while p0 < n_pos as u32 {
                let n = if p0 < pos0 { t.min(pos0 - p0) } else { t };
                let r = p0 as usize * kv_dim..(p0 + n) as usize * kv_dim;
                let (kb, vb) = (upload_f32(ctx, &k_rows[r.clone()]), upload_f32(ctx, &v_rows[r]));
                ctx.run(&[&kv_write(ctx, &kb, &vb, &ck, &cv, &kv, p0, n).unwrap()]);
                p0 += n;
            }
            let qb = upload_f32(ctx, &q);
            let out = upload_u32(ctx, &vec![POISON; q.len()]);
            let k = attention(ctx, &qb, &ck, &cv, &out, &shape, pos0, t, &scratch, splits).unwrap();
            ctx.run(&k.iter().collect::<Vec<_>>());
            let got = read_f32(ctx, &out, q.len());
            let k_held: Vec<f64> = k_rows.iter().map(|&x| held(x, dtype)).collect();
            let v_held: Vec<f64> = v_rows.iter().map(|&x| held(x, dtype)).collect();
            let q64: Vec<f64> = q.iter().map(|&x| x as f64).collect();
            let (nh, nkv, hd) = (n_heads as usize, n_kv as usize, head_dim as usize);
            let want = reference(
                &q64,
                &k_held,
                &v_held,
                nh,
                nkv,
                hd,
                pos0 as usize,
                t as usize,
                shape.scale as f64,
                window as usize,
                0.0,
            );
            let what = format!(
                "ring {dtype:?} window={window} t={t} slots={capacity} pos0={pos0} splits={splits:?} row={row}"
            );
            assert_close(&what, &got, &want, ATOL, RTOL);
        }
    }
}

/// A ring must be told a window that fits it, and takes at most its size in one write.
#[test]
fn ring_cache_rejects_what_it_cannot_hold() {
    let ctx = ctx();
    let kv = KvCacheShape { n_kv_heads: 2, head_dim: 64, capacity: 10, dtype: KvDtype::F16, ring: true };
    let buf = |elems: u64| ctx.storage("buf", elems * 4).unwrap();
    let (q, out) = (buf(8 * 8 * 64), buf(8 * 8 * 64));
    let (ck, cv) = (ctx.storage("ck", kv.bytes()).unwrap(), ctx.storage("cv", kv.bytes()).unwrap());
    let scratch = AttentionScratch::new(ctx, 8, 8, 64, 4).unwrap();
    let shape = |window| AttentionShape { window, ..AttentionShape::new(8, kv) };
    let run = |window, pos0, t| attention(ctx, &q, &ck, &cv, &out, &shape(window), pos0, t, &scratch, None);
    run(7, 1000, 4).expect("7 + 4 - 1 = 10 slots, far past the ring's size");
    let err = run(8, 1000, 4).err().expect("8 + 4 - 1 > 10 slots");
    assert!(err.to_string().contains("ring of 10 slots"), "{err}");
    let err = run(0, 5, 1).err().expect("a ring without a window");
    assert!(err.to_string().contains("window of 0"), "{err}");
    let (kb, vb) = (buf(11 * 128), buf(11 * 128));
    let err = kv_write(ctx, &kb, &vb, &ck, &cv, &kv, 3, 11).err().expect("11 rows into 10 slots");
    assert!(err.to_string().contains("ring of 10 slots"), "{err}");
}
