//! LayerNorm (with and without a residual, out of place and in place) vs an f64 CPU reference.
//!
//! The reference normalizes y exactly as the kernel receives it: with a residual, y = x + residual
//! rounded to f32 (what torch's `LayerNorm(x + sublayer(x))` gets too), so only the norm's own error
//! is measured. Tolerance 1e-5 absolute + 2e-5 relative: the corrected two-pass statistics leave
//! the centred value y − mean off by a few f32 roundings of |y − mean| (y − mean_f32 is exact
//! when mean ≫ std, Sterbenz), and 1/σ by about sqrt(dim)·2⁻²⁴ from the f32 sums (≈ 5e-6 at
//! dim 8192), times |weight| ≤ 1.5 and |z| ≲ 4. Rows of 1000 + N(0, 1) and −3·10⁴ + N(0, 2) are the
//! cases the naive E[y²] − E[y]² gets wrong by 10% or more and the two-pass mean without its
//! correction term by ~5e-5 (both tried in the shader: each fails here).

mod common;
use common::reference::layer_norm as reference;
use common::*;
use webgpu_llm::ops::layer_norm::{layer_norm, MAX_DIM};
use webgpu_llm::Context;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 2e-5;

/// One test at a time on the GPU: without a Vulkan driver wgpu falls back to GL (llvmpipe), whose
/// context lock panics ("Could not lock adapter context") when another thread holds it over a
/// second, as a long dispatch here does.
fn gpu_turn() -> std::sync::MutexGuard<'static, ()> {
    static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GPU.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the op on `x` (+ `residual`), out of place or with `x`'s buffer as `out`.
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Context,
    x: &[f32],
    residual: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    (rows, dim): (usize, usize),
    eps: f32,
    in_place: bool,
) -> Vec<f32> {
    let xb = upload_f32(ctx, x);
    let rb = residual.map(|r| upload_f32(ctx, r));
    let (wb, bb) = (upload_f32(ctx, w), upload_f32(ctx, b));
    // a separate output starts as NaN so an unwritten element fails
    let out = if in_place { xb.clone() } else { upload_u32(ctx, &vec![u32::MAX; rows * dim]) };
    let k = layer_norm(ctx, &xb, rb.as_ref(), &wb, &bb, &out, rows as u32, dim as u32, eps).unwrap();
    ctx.run(&[&k]);
    read_f32(ctx, &out, rows * dim)
}

#[test]
fn layer_norm_matches_reference() {
    let _gpu = gpu_turn();
    let mut rng = Rng::new(seed("layer_norm"));
    for (name, ctx) in contexts() {
        // BERT-small/base/large hidden sizes, one not a multiple of the workgroup, 1, and the largest
        let shapes = [(3usize, 1usize), (5, 7), (17, 384), (9, 768), (4, 1024), (3, 4096), (2, MAX_DIM as usize)];
        for &(rows, dim) in &shapes {
            for (offset, std) in [(0.0f32, 2.0f32), (1000.0, 1.0), (-3e4, 2.0)] {
                let eps = if offset == 0.0 { 1e-5 } else { 1e-12 }; // torch's default, BERT's
                let x: Vec<f32> = (0..rows * dim).map(|_| offset + rng.normal(std)).collect();
                let r: Vec<f32> = (0..rows * dim).map(|_| rng.normal(1.0)).collect();
                let w: Vec<f32> = (0..dim).map(|_| 1.0 + rng.uniform() * 0.5).collect();
                let b = rng.vec(dim, 0.5);
                let y: Vec<f32> = x.iter().zip(&r).map(|(a, c)| a + c).collect(); // f32, as the kernel adds
                let want = reference(&x, &w, &b, rows, dim, eps as f64);
                let want_res = reference(&y, &w, &b, rows, dim, eps as f64);
                for in_place in [false, true] {
                    let what =
                        |res: &str| format!("layer_norm {name} {rows}x{dim} offset {offset} {res} in_place={in_place}");
                    let got = run(ctx, &x, None, &w, &b, (rows, dim), eps, in_place);
                    assert_close(&what("no residual"), &got, &want, ATOL, RTOL);
                    let got = run(ctx, &x, Some(&r), &w, &b, (rows, dim), eps, in_place);
                    assert_close(&what("residual"), &got, &want_res, ATOL, RTOL);
                }
            }
        }
    }
}

/// More rows than one grid dimension holds (65535): the fold into (x, y) reaches every row.
#[test]
fn layer_norm_folds_many_rows() {
    let _gpu = gpu_turn();
    let mut rng = Rng::new(seed("layer_norm_rows"));
    let ctx = ctx();
    let (rows, dim) = (70_000usize, 3usize);
    let x: Vec<f32> = (0..rows * dim).map(|_| rng.normal(1.0)).collect();
    let (w, b) = (rng.vec(dim, 1.5), rng.vec(dim, 0.5));
    let got = run(ctx, &x, None, &w, &b, (rows, dim), 1e-5, false);
    assert_close("layer_norm 70000 rows", &got, &reference(&x, &w, &b, rows, dim, 1e-5), ATOL, RTOL);
}

#[test]
fn layer_norm_rejects_bad_arguments() {
    let _gpu = gpu_turn();
    let ctx = ctx();
    let buf = |n: u64| ctx.storage("t", 4 * n).unwrap();
    let (x, r, w, b, out) = (buf(12), buf(12), buf(4), buf(4), buf(12));
    let err = |res: webgpu_llm::gpu::Result<_>, what: &str| {
        res.err().unwrap_or_else(|| panic!("{what}: accepted")).to_string()
    };
    assert!(layer_norm(ctx, &x, Some(&r), &w, &b, &out, 3, 4, 1e-5).is_ok());
    assert!(err(layer_norm(ctx, &x, None, &w, &b, &out, 4, 4, 1e-5), "x short").contains("`x`"));
    assert!(err(layer_norm(ctx, &x, Some(&buf(8)), &w, &b, &out, 3, 4, 1e-5), "residual short").contains("residual"));
    assert!(err(layer_norm(ctx, &x, None, &buf(3), &b, &out, 3, 4, 1e-5), "weight short").contains("weight"));
    assert!(err(layer_norm(ctx, &x, None, &w, &buf(3), &out, 3, 4, 1e-5), "bias short").contains("bias"));
    assert!(err(layer_norm(ctx, &x, None, &w, &b, &buf(11), 3, 4, 1e-5), "out short").contains("out"));
    assert!(err(layer_norm(ctx, &x, Some(&out), &w, &b, &out, 3, 4, 1e-5), "out = residual").contains("residual"));
    err(layer_norm(ctx, &x, None, &w, &b, &w, 1, 4, 1e-5), "out = weight");
    err(layer_norm(ctx, &x, None, &w, &b, &out, 0, 4, 1e-5), "no rows");
    err(layer_norm(ctx, &x, None, &w, &b, &out, 3, 0, 1e-5), "dim 0");
    err(layer_norm(ctx, &x, None, &w, &b, &out, 3, 4, f32::NAN), "eps NaN");
    let big = || buf(MAX_DIM as u64 + 1);
    let e = err(layer_norm(ctx, &big(), None, &big(), &big(), &big(), 1, MAX_DIM + 1, 1e-5), "dim too large");
    assert!(e.contains(&format!("{}", MAX_DIM + 1)), "{e}");
}
