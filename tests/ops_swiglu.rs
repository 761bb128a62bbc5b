//! SwiGLU, GeGLU and the sigmoid gate (separate and fused gate/up) vs an f64 CPU reference.
//! Tolerance, relative per element: the kernel's silu is g·sigmoid(g) from one f32 exp of -|g| and
//! one division. exp's error grows with |g| (exp2(g·log2 e) rounds the product: lavapipe reaches
//! 1.3e-6 relative at g = -30); Vulkan allows 3 + 2|g| ulp, so (6 + 2|g|)·2⁻²³ with ~3 ulp for the
//! rest. GeGLU is g·sigmoid(a), a = 2√(2/π)(g + 0.044715 g³): the same exp of -|a| after a few f32
//! roundings of a (each ≤ |a|·2⁻²⁴, which exp turns into a relative error of that size), so
//! (6 + 5|a|)·2⁻²³. A wrong half, row stride or sign errs by far more. One context: no
//! feature-dependent path.

mod common;
use common::*;
use webgpu_llm::ops::swiglu::{swiglu, swiglu_fused, Act};

/// The activation's sigmoid argument a (act(g) = g·sigmoid(a)).
fn arg(act: Act, g: f64) -> f64 {
    match act {
        Act::Silu | Act::Sigmoid => g,
        Act::GeluTanh => 2.0 * (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g),
    }
}

/// act(g) in f64: silu, or PyTorch's tanh GELU 0.5 g (1 + tanh z) as g / (1 + exp(-2z)) (the same
/// value; 1 + tanh z loses all f64 digits once tanh z is near -1).
fn act_ref(act: Act, g: f64) -> f64 {
    let f = if act == Act::Sigmoid { 1.0 } else { g };
    f / (1.0 + (-arg(act, g)).exp())
}

/// Inputs of std ≈ 3 with planted extremes (±100, ±30, 0) where exp over/underflows in f32.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.normal(3.0)).collect();
    for (k, &e) in [-100.0f32, 100.0, -30.0, 30.0, 0.0, -0.0, 88.0, -88.0].iter().enumerate() {
        if n > 8 {
            let i = rng.below(n as u64) as usize;
            v[i] = e;
        } else if k < n {
            v[k] = e;
        }
    }
    v
}

fn check(what: &str, act: Act, got: &[f32], gate: &[f32], up: &[f32]) {
    for (i, ((&o, &g), &u)) in got.iter().zip(gate).zip(up).enumerate() {
        let want = act_ref(act, g as f64) * u as f64;
        // Vulkan's exp bound (3 + 2|a| ulp) plus ~3 ulp for the divide and two multiplies (and for
        // GeGLU a's own rounding), relative; 1e-35 absolute where exp(-|a|) is below f32's normal
        // range and may be flushed to 0.
        let a = arg(act, g as f64).abs();
        let slope = if act == Act::GeluTanh { 5.0 } else { 2.0 };
        let tol = (6.0 + slope * a) * f64::from(f32::EPSILON) * want.abs() + 1e-35;
        assert!(o.is_finite(), "{what}: element {i} is {o} (gate {g}, up {u})");
        assert!((o as f64 - want).abs() <= tol, "{what}: element {i} = {o}, want {want} (gate {g}, up {u})");
    }
}

#[test]
fn swiglu_matches_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("swiglu"));
    // odd widths take the scalar path, 64 and 1536 the vec4 one (SmolLM2's FFN is 1536)
    for (act, t) in [(Act::Silu, 1usize), (Act::Silu, 5), (Act::GeluTanh, 1), (Act::GeluTanh, 5), (Act::Sigmoid, 3)] {
        for &f in &[1usize, 67, 1537, 64, 1536] {
            let n = t * f;
            let (gate, up) = (inputs(&mut rng, n), rng.vec(n, 2.0));
            let out = ctx.storage("out", (n * 4) as u64).unwrap();
            let (gb, ub) = (upload_f32(ctx, &gate), upload_f32(ctx, &up));
            ctx.run(&[&swiglu(ctx, &gb, &ub, &out, t as u32, f as u32, act).unwrap()]);
            check(&format!("{act:?} t={t} f={f}"), act, &read_f32(ctx, &out, n), &gate, &up);

            let fused: Vec<f32> =
                (0..t).flat_map(|r| gate[r * f..(r + 1) * f].iter().chain(&up[r * f..(r + 1) * f])).copied().collect();
            let fb = upload_f32(ctx, &fused);
            let out = ctx.storage("out", (n * 4) as u64).unwrap();
            ctx.run(&[&swiglu_fused(ctx, &fb, &out, t as u32, f as u32, act).unwrap()]);
            check(&format!("{act:?} fused t={t} f={f}"), act, &read_f32(ctx, &out, n), &gate, &up);
        }
    }
}

#[test]
fn swiglu_rejects_bad_shapes() {
    let ctx = ctx();
    let b = ctx.storage("b", 4 * 10).unwrap();
    let err = swiglu_fused(ctx, &b, &b, 2, 5, Act::Silu).err().expect("gate_up needs 2·2·5 = 20 elements");
    assert!(err.to_string().contains("gate_up"), "{err}");
    assert!(swiglu(ctx, &b, &b, &b, 0, 5, Act::Silu).is_err(), "empty shape");
    assert!(swiglu(ctx, &b, &b, &b, 3, 4, Act::GeluTanh).is_err(), "12 elements in buffers of 10");
}
