//! Exact (erf) GELU vs f64 (`reference::gelu`: ½x·erfc(−x/√2), erfc good to ~1e-13 relative).
//!
//! Tolerance, relative to |GELU(x)| (so the negative tail is checked too, where the naive
//! x·½(1 + erf) in f32 loses every digit), in units of u = 2⁻²³:
//! x ≥ 0: 8u. GELU = x − x·h, h = ½erfc(x/√2) ≤ ½; erfcc's own error (< 1.2e-7 ≈ 1u of h) and
//! ~5 roundings (t, the alternating polynomial, the products) reach the result scaled by
//! x·h/GELU ≤ 1, plus the final rounding. llvmpipe's (GL) worst: 3.1u, near x = 0.13.
//! x < 0: (12 + 2x²)u. GELU = x·h, so h's relative error is the result's: the same ~6u, plus
//! exp of an argument ≈ −x²/2 − 1.3, which Vulkan/WGSL allow 3 + 2|arg| ulp (≈ 5.6 + x²), plus
//! the rounding of z² = (x/√2)² carried into exp (≈ x²/2 · u). llvmpipe's worst: 3.7u·(1 + x²).
//! A wrong constant (√2, ½), the tanh approximation (off by up to 4.7e-4, at x ≈ −2.7) or 1 + erf
//! (relative error ~1 below x = −5) fails by orders of magnitude. Past |x/√2| = 10 the output is
//! exactly x or ±0; results below f32's smallest normal (1.2e-38) may be 0.

mod common;
use common::reference::{erfc, gelu as reference};
use common::*;
use webgpu_llm::ops::gelu::gelu;

/// Allowed |got − want| for input x.
fn tolerance(x: f64, want: f64) -> f64 {
    let u = f64::from(f32::EPSILON);
    let ulps = if x >= 0.0 { 8.0 } else { 12.0 + 2.0 * x * x };
    // plus f32's smallest normal: results below it may be flushed to 0 (WGSL allows it)
    ulps * u * want.abs() + f64::from(f32::MIN_POSITIVE)
}

#[test]
fn reference_erfc_is_accurate() {
    // values from Python's math.erfc / math.erf (correctly rounded libm)
    for (z, want) in [
        (0.0, 1.0),
        (0.5, 1.0 - 0.5204998778130465),
        (1.9, 0.007209570764742524),
        (2.0, 0.004677734981047266),
        (3.0, 2.209049699858544e-05),
        (5.0, 1.537459794428035e-12),
        (5.0 * std::f64::consts::SQRT_2, 1.5239706048320995e-23),
        (-1.0, 1.8427007929497148),
    ] {
        let got = erfc(z);
        assert!((got - want).abs() <= 1e-13 * want.abs(), "erfc({z}) = {got}, want {want}");
    }
}

#[test]
fn gelu_matches_reference() {
    let mut rng = Rng::new(seed("gelu"));
    for (name, ctx) in contexts() {
        // a dense sweep of [−10, 10], random values, and the far ends
        let n_sweep = 400_001;
        let mut x: Vec<f32> = (0..n_sweep).map(|k| -10.0 + 20.0 * k as f32 / (n_sweep - 1) as f32).collect();
        x.extend((0..100_000).map(|_| rng.normal(4.0)));
        x.extend([0.0, -0.0, 1e-30, -1e-30, 14.5, -14.5, 30.0, -30.0, 1e4, -1e4, 1e30, -1e30, f32::MAX, f32::MIN]);
        let xb = upload_f32(ctx, &x);
        ctx.run(&[&gelu(ctx, &xb, x.len() as u32).unwrap()]);
        let got = read_f32(ctx, &xb, x.len());
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            let want = reference(v as f64);
            let tol = tolerance(v as f64, want);
            assert!(
                g.is_finite() && (g as f64 - want).abs() <= tol,
                "{name} [{i}]: gelu({v}) = {g}, want {want} (|diff| {:.3e} > {tol:.3e})",
                (g as f64 - want).abs()
            );
        }
    }
}

/// Only the first n elements change; a tail past n keeps its values, and n past the buffer is refused.
#[test]
fn gelu_stops_at_n_and_rejects_bad_arguments() {
    let ctx = ctx();
    let x: Vec<f32> = (0..300).map(|i| i as f32 * 0.01 - 1.0).collect();
    let xb = upload_f32(ctx, &x);
    ctx.run(&[&gelu(ctx, &xb, 257).unwrap()]);
    let got = read_f32(ctx, &xb, 300);
    assert_eq!(got[257..], x[257..], "elements past n");
    assert!((got[0] as f64 - reference(-1.0)).abs() < 1e-6);
    assert!(gelu(ctx, &xb, 301).is_err(), "x holds 300");
    assert!(gelu(ctx, &xb, 0).is_err(), "empty");
}
