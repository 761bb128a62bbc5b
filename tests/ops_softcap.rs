//! Soft-capping (`c · tanh(x / c)`, Gemma 2's final logits) vs f64.
//! Tolerance: tanh from one f32 exp of -2|y| (Vulkan allows 3 + 2·2|y| ulp, and (1 − e) loses
//! nothing for |y| ≥ 0.35 while for small |y| the relative error of 1 − e is ≈ 2⁻²⁴/(2|y|)), a
//! divide and two multiplies: 1e-6·c absolute + (8 + 4|y|)·2⁻²³ relative covers both, while a
//! wrong cap or sign errs by 1e-2 and more. Inputs reach ±10c so the output saturates at ±c,
//! and ±1e30 where exp must underflow to 0 without NaN.

mod common;
use common::*;
use webgpu_llm::ops::softcap::softcap;

#[test]
fn softcap_matches_reference() {
    let mut rng = Rng::new(seed("softcap"));
    for (name, ctx) in contexts() {
        for &(n, c) in &[(1usize, 30.0f32), (1000, 30.0), (4099, 5.0), (256 * 300 + 7, 2.5)] {
            let mut x: Vec<f32> = (0..n).map(|_| rng.normal(3.0 * c)).collect();
            if n > 8 {
                x[..6].copy_from_slice(&[0.0, -0.0, 1e30, -1e30, 1e-30, -c]);
            }
            let xb = upload_f32(ctx, &x);
            ctx.run(&[&softcap(ctx, &xb, c, n as u32).unwrap()]);
            let got = read_f32(ctx, &xb, n);
            for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
                let y = v as f64 / c as f64;
                let want = c as f64 * y.tanh();
                let tol = 1e-6 * c as f64 + (8.0 + 4.0 * y.abs()) * f64::from(f32::EPSILON) * want.abs();
                assert!(
                    g.is_finite() && (g as f64 - want).abs() <= tol,
                    "{name} n={n} c={c} [{i}]: {v} → {g}, want {want}"
                );
            }
        }
    }
}

#[test]
fn softcap_rejects_bad_arguments() {
    let ctx = ctx();
    let x = ctx.storage("x", 4 * 10).unwrap();
    assert!(softcap(ctx, &x, 30.0, 11).is_err(), "x holds 10");
    assert!(softcap(ctx, &x, 0.0, 10).is_err(), "cap 0");
    assert!(softcap(ctx, &x, f32::NAN, 10).is_err(), "cap NaN");
    assert!(softcap(ctx, &x, 30.0, 0).is_err(), "empty");
}
