//! RMSNorm vs an f64 CPU reference.
//! Tolerance: the GPU sums squares in f32 in a different order (tree / subgroup), giving a relative
//! error in the scale of about sqrt(dim)·2⁻²⁴ ≈ 1e-5 for dim ≤ 3000; 1e-5 absolute + 2e-5 relative
//! leaves margin while a wrong eps, weight or row offset shows up at 1e-2 and more.

mod common;
use common::reference::rmsnorm as reference;
use common::*;
use webgpu_llm::ops::rmsnorm::{rms_norm, rms_norm_add, rms_norm_inplace};

#[test]
fn rmsnorm_matches_reference() {
    let mut rng = Rng::new(seed("rmsnorm"));
    for (name, ctx) in contexts() {
        // odd sizes: head_dim 64/128 (qk-norm), a hidden size that is not a multiple of the workgroup, 3072
        for &(rows, dim) in &[(1usize, 64usize), (7, 128), (5, 577), (3, 3072), (300, 96)] {
            let eps = 1e-5;
            let x: Vec<f32> = (0..rows * dim).map(|_| rng.normal(2.0)).collect();
            let w = rng.vec(dim, 1.5);
            let want = reference(&x, &w, rows, dim, eps as f64);
            let xb = upload_f32(ctx, &x);
            let wb = upload_f32(ctx, &w);
            let yb = ctx.storage("y", (rows * dim * 4) as u64).unwrap();
            let k = rms_norm(ctx, &xb, &wb, &yb, rows as u32, dim as u32, eps).unwrap();
            ctx.run(&[&k]);
            assert_close(&format!("rmsnorm {name} {rows}x{dim}"), &read_f32(ctx, &yb, rows * dim), &want, 1e-5, 2e-5);
            // into a residual: r += rmsnorm(x) * w
            let r: Vec<f32> = (0..rows * dim).map(|_| rng.normal(1.0)).collect();
            let rb = upload_f32(ctx, &r);
            ctx.run(&[&rms_norm_add(ctx, &xb, &wb, &rb, rows as u32, dim as u32, eps).unwrap()]);
            let want_add: Vec<f64> = r.iter().zip(&want).map(|(a, b)| *a as f64 + b).collect();
            assert_close(
                &format!("rmsnorm_add {name} {rows}x{dim}"),
                &read_f32(ctx, &rb, rows * dim),
                &want_add,
                2e-5,
                2e-5,
            );
            let k = rms_norm_inplace(ctx, &xb, &wb, rows as u32, dim as u32, eps).unwrap();
            ctx.run(&[&k]);
            assert_close(
                &format!("rmsnorm in place {name} {rows}x{dim}"),
                &read_f32(ctx, &xb, rows * dim),
                &want,
                1e-5,
                2e-5,
            );
        }
    }
}

#[test]
fn rmsnorm_rejects_short_buffers() {
    let ctx = ctx();
    let x = ctx.storage("x", 4 * 10).unwrap();
    let w = ctx.storage("w", 4 * 5).unwrap();
    let err = rms_norm_inplace(ctx, &x, &w, 3, 5, 1e-5).err().expect("x is too short");
    assert!(err.to_string().contains("x"), "{err}");
}
