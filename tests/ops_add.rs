//! Residual add vs the CPU: f32 addition is correctly rounded on both sides (WGSL requires it,
//! Vulkan too), so results must be bit-identical. Inputs avoid subnormals, which GPUs may flush.
//! One context: add has no feature-dependent path.

mod common;
use common::*;
use webgpu_llm::ops::add::{add, add_inplace, add_scalar};

/// Values spread over many binades (and both signs) so that the adds round in every way.
fn data(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform() * 2f32.powi(rng.below(40) as i32 - 20)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn add_is_exact() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("add"));
    // scalar path (n % 4 != 0) and vec4 path, ragged last workgroups, SmolLM2's 5 x 576 hidden
    for &n in &[1usize, 3, 4, 5, 1000, 1001, 4099, 5 * 576, 256 * 1000 + 4] {
        let (a, b) = (data(&mut rng, n), data(&mut rng, n));
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let (ab, bb) = (upload_f32(ctx, &a), upload_f32(ctx, &b));
        let out = ctx.storage("out", (n * 4) as u64).unwrap();
        ctx.run(&[&add(ctx, &ab, &bb, &out, n as u32).unwrap()]);
        assert!(bits(&read_f32(ctx, &out, n)) == bits(&want), "add n={n} differs");
        ctx.run(&[&add_inplace(ctx, &ab, &bb, n as u32).unwrap()]);
        assert!(bits(&read_f32(ctx, &ab, n)) == bits(&want), "add_inplace n={n} differs");
        // out aliasing an input runs in place: bb += (a + b)
        let want2: Vec<f32> = want.iter().zip(&b).map(|(x, y)| x + y).collect();
        ctx.run(&[&add(ctx, &ab, &bb, &bb, n as u32).unwrap()]);
        assert!(bits(&read_f32(ctx, &bb, n)) == bits(&want2), "add into b n={n} differs");
    }
}

#[test]
fn add_scalar_is_exact() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("add_scalar"));
    for &n in &[1usize, 5, 96, 2560, 4099] {
        let a = data(&mut rng, n);
        let c = rng.uniform() * 4.0;
        let want: Vec<f32> = a.iter().map(|x| x + c).collect();
        let ab = upload_f32(ctx, &a);
        ctx.run(&[&add_scalar(ctx, &ab, c, n as u32).unwrap()]);
        assert!(bits(&read_f32(ctx, &ab, n)) == bits(&want), "add_scalar n={n} differs");
    }
    let small = ctx.storage("small", 4 * 9).unwrap();
    assert!(add_scalar(ctx, &small, 1.0, 10).is_err(), "the buffer holds 9 elements");
    assert!(add_scalar(ctx, &small, f32::NAN, 9).is_err(), "NaN is not a constant to add");
}

#[test]
fn add_over_65535_workgroups() {
    // 2^24 + 3 elements on the scalar path = 65 537 workgroups of 256: the grid folds into y.
    let ctx = ctx();
    let mut rng = Rng::new(seed("add big"));
    let n = (1 << 24) + 3;
    // cheap data: a random block repeated (the point is the index math of the folded grid)
    let block = data(&mut rng, 4099);
    let a: Vec<f32> = (0..n).map(|i| block[i % 4099]).collect();
    let b: Vec<f32> = (0..n).map(|i| block[(i * 7 + 1) % 4099] * i as f32).collect();
    let (ab, bb) = (upload_f32(ctx, &a), upload_f32(ctx, &b));
    ctx.run(&[&add_inplace(ctx, &ab, &bb, n as u32).unwrap()]);
    let got = read_f32(ctx, &ab, n);
    let bad = (0..n).find(|&i| got[i].to_bits() != (a[i] + b[i]).to_bits());
    assert!(bad.is_none(), "element {bad:?} differs");
}

#[test]
fn add_rejects_bad_shapes() {
    let ctx = ctx();
    let (a, b) = (ctx.storage("a", 4 * 10).unwrap(), ctx.storage("b", 4 * 9).unwrap());
    let err = add_inplace(ctx, &a, &b, 10).err().expect("b holds 9 elements");
    assert!(err.to_string().contains("`b`"), "{err}");
    assert!(add_inplace(ctx, &a, &a, 4).is_err(), "a += a would bind a twice");
    assert!(add(ctx, &a, &a, &b, 0).is_err(), "n = 0");
}
