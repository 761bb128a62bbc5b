//! act_q8 (activations to int8 blocks of 32) vs an f64 CPU reference.
//! Tolerance: d = max|x| / 127 is one f32 division (relative error ≤ 2⁻²⁴; with the norm folded in,
//! the f32 sum of squares adds ~sqrt(k)·2⁻²⁴ ≈ 1e-5 at k = 8192, so 2e-5 then). Each q must be a
//! nearest integer of x / d: |q − x/d| ≤ 1/2 + slack, the slack covering f32's x·(127/m) against
//! f64's x/d (1e-4 plain, 2e-3 normed: 127 × the 1e-5 above). A wrong scale, row, element order or
//! rounding mode misses by ≥ 1/2 on some of the thousands of elements checked. The half sums must
//! be d·Σq of the q the kernel wrote (one f32 product of an exact integer sum).

mod common;
use common::*;
use webgpu_llm::ops::act_q8::{act_q8, ActQ8};
use webgpu_llm::ops::matmul::Norm;

struct Case {
    rows: usize,
    k: usize,
    x_row0: usize,
    norm: bool,
}

fn run(ctx: &webgpu_llm::Context, name: &str, rng: &mut Rng, c: &Case) {
    let Case { rows, k, x_row0, norm } = *c;
    let what = format!("act_q8 {name} rows={rows} k={k} x_row0={x_row0} norm={norm}");
    let mut x: Vec<f32> = (0..(x_row0 + rows) * k).map(|_| rng.normal(1.5)).collect();
    // a block of zeros (d = 0), one huge block, one with a single outlier
    let r0 = x_row0 * k;
    x[r0..r0 + 32].fill(0.0);
    if k >= 96 {
        x[r0 + 32..r0 + 64].iter_mut().for_each(|v| *v *= 1e4);
        x[r0 + 64 + 7] = 300.0;
    }
    let w: Vec<f32> = (0..k).map(|_| 0.5 + rng.normal(0.5).abs()).collect();
    let eps = 1e-5f32;

    let xb = upload_f32(ctx, &x);
    let wb = upload_f32(ctx, &w);
    let out = ActQ8::new(ctx, "xq", rows as u32 + 1, k as u32).unwrap();
    let nw = norm.then_some(Norm { weight: &wb, eps });
    let kern = act_q8(ctx, &xb, &out, rows as u32, x_row0 as u32, nw).unwrap();
    ctx.run(&[&kern]);
    let words = read_u32(ctx, &out.q, rows * k / 4);
    let s = read_f32(ctx, &out.s, rows * k / 32 * 4);

    let (d_tol, slack) = if norm { (2e-5, 2e-3) } else { (1.2e-7, 1e-4) };
    for r in 0..rows {
        let row = &x[(x_row0 + r) * k..(x_row0 + r + 1) * k];
        let rs = if norm {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / k as f64;
            1.0 / (ms + eps as f64).sqrt()
        } else {
            1.0
        };
        let v: Vec<f64> =
            row.iter().zip(&w).map(|(&a, &g)| if norm { a as f64 * rs * g as f64 } else { a as f64 }).collect();
        for b in 0..k / 32 {
            let block = &v[32 * b..32 * b + 32];
            let m = block.iter().fold(0.0f64, |a, e| a.max(e.abs()));
            let d = m / 127.0;
            let sb = &s[(r * k / 32 + b) * 4..][..4];
            let at = format!("{what}: row {r} block {b}");
            assert!((sb[0] as f64 - d).abs() <= d_tol * d, "{at}: d = {} want {d}", sb[0]);
            let q: Vec<i32> =
                (0..32).map(|e| (words[r * k / 4 + 8 * b + e / 4] >> (8 * (e % 4))) as u8 as i8 as i32).collect();
            for (e, (&qe, &ve)) in q.iter().zip(block).enumerate() {
                let want = if d == 0.0 { 0.0 } else { ve / d };
                assert!((qe as f64 - want).abs() <= 0.5 + slack, "{at} element {e}: q = {qe} for x/d = {want}");
            }
            for (h, &got) in sb[1..3].iter().enumerate() {
                let sum: i32 = q[16 * h..16 * h + 16].iter().sum();
                let want = sb[0] as f64 * sum as f64;
                assert!((got as f64 - want).abs() <= 1e-6 * want.abs(), "{at}: half {h} sum {got} want {want}");
            }
        }
    }
}

#[test]
fn act_q8_matches_reference() {
    let mut rng = Rng::new(seed("act_q8"));
    for (name, ctx) in contexts() {
        for c in [
            Case { rows: 1, k: 32, x_row0: 0, norm: false },
            Case { rows: 1, k: 1184, x_row0: 0, norm: true },
            Case { rows: 3, k: 1184, x_row0: 2, norm: false },
            Case { rows: 2, k: 8192, x_row0: 1, norm: true },
            Case { rows: 1, k: 8192, x_row0: 0, norm: false },
        ] {
            run(ctx, name, &mut rng, &c);
        }
    }
}

#[test]
fn act_q8_rejects_bad_shapes() {
    let ctx = ctx();
    let err = ActQ8::new(ctx, "xq", 1, 40).err().expect("k is not a multiple of 32");
    assert!(err.to_string().contains("multiple of 32"), "{err}");
    let out = ActQ8::new(ctx, "xq", 2, 64).unwrap();
    let x = ctx.storage("x", 4 * 100).unwrap();
    let err = act_q8(ctx, &x, &out, 2, 0, None).err().expect("x holds 100 of 128 elements");
    assert!(err.to_string().contains("`x`"), "{err}");
    let err = act_q8(ctx, &x, &out, 3, 0, None).err().expect("3 rows into room for 2");
    assert!(err.to_string().contains("3 rows"), "{err}");
    let w = ctx.storage("w", 4 * 10).unwrap();
    let x = ctx.storage("x", 4 * 128).unwrap();
    let err = act_q8(ctx, &x, &out, 2, 0, Some(Norm { weight: &w, eps: 1e-5 })).err().expect("short weight");
    assert!(err.to_string().contains("norm weight"), "{err}");
}
