//! Pooling (CLS, mean, last) over a padded batch, Matryoshka truncation and L2 normalisation vs an
//! f64 CPU reference.
//!
//! Tolerance 1e-5 absolute + 1e-5 relative: a mean of up to 40 f32 rows of |x| < 5 carries
//! ~40 · 2⁻²⁴ · 5 ≈ 1e-5 at worst (~1e-6 typical), and a normalised vector's entries are < 1 with
//! one f32 sqrt and division each. A wrong row (off by one, a padded row, another sequence) moves
//! values by O(1). Padded rows hold NaN, so reading one shows as NaN.

mod common;
use common::*;
use webgpu_llm::ops::pool::{pool, Pooling, MAX_DIMS};

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-5;

fn reference(x: &[f32], lens: &[u32], seq: usize, dim: usize, dims: usize, mode: Pooling, normalize: bool) -> Vec<f64> {
    let mut out = Vec::new();
    for (b, &len) in lens.iter().enumerate() {
        let len = len as usize;
        let row = |r: usize| &x[(b * seq + r) * dim..][..dim];
        let v: Vec<f64> = match mode {
            Pooling::Cls => row(0).iter().map(|&a| a as f64).collect(),
            Pooling::Last => row(len - 1).iter().map(|&a| a as f64).collect(),
            Pooling::Mean => (0..dim).map(|i| (0..len).map(|r| row(r)[i] as f64).sum::<f64>() / len as f64).collect(),
        };
        let v = &v[..dims];
        let norm = if normalize { v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12) } else { 1.0 };
        out.extend(v.iter().map(|a| a / norm));
    }
    out
}

#[test]
fn pool_matches_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(seed("pool"));
    for &(dim, seq, ref lens) in
        &[(8usize, 1usize, vec![1u32]), (384, 40, vec![40, 1, 17, 39]), (768, 9, vec![3, 9]), (1000, 5, vec![5, 2, 4])]
    {
        let batch = lens.len();
        let mut x: Vec<f32> = (0..batch * seq * dim).map(|_| rng.normal(1.5)).collect();
        for (b, &len) in lens.iter().enumerate() {
            for v in &mut x[(b * seq + len as usize) * dim..(b + 1) * seq * dim] {
                *v = f32::NAN; // padded rows must never be read
            }
        }
        let (xb, lb) = (upload_f32(ctx, &x), upload_u32(ctx, lens));
        for mode in [Pooling::Cls, Pooling::Mean, Pooling::Last] {
            for normalize in [true, false] {
                for dims in [dim, dim.div_ceil(3)] {
                    let out = ctx.storage("out", (batch * dims * 4) as u64).unwrap();
                    let shape = (batch as u32, seq as u32, dim as u32);
                    ctx.run(&[&pool(ctx, &xb, &lb, &out, shape, dims as u32, mode, normalize).unwrap()]);
                    let got = read_f32(ctx, &out, batch * dims);
                    let want = reference(&x, lens, seq, dim, dims, mode, normalize);
                    let what = format!("pool {mode:?} normalize={normalize} dim={dim} dims={dims} lens={lens:?}");
                    assert_close(&what, &got, &want, ATOL, RTOL);
                }
            }
        }
    }
}

#[test]
fn pool_rejects_bad_shapes() {
    let ctx = ctx();
    let (x, lens, out) =
        (ctx.storage("x", 4 * 3 * 3 * 8).unwrap(), upload_u32(ctx, &[2, 2]), ctx.storage("o", 64).unwrap());
    let run = |shape, dims| pool(ctx, &x, &lens, &out, shape, dims, Pooling::Mean, true);
    run((2, 2, 8), 8).expect("fits");
    assert!(run((2, 2, 8), 9).err().unwrap().to_string().contains("output dims"));
    assert!(run((2, 2, 8), 0).err().unwrap().to_string().contains("output dims"));
    assert!(run((3, 2, 8), 4).err().unwrap().to_string().contains("lens"));
    assert!(run((2, 5, 8), 4).err().unwrap().to_string().contains("`x`"));
    assert!(run((0, 2, 8), 4).err().unwrap().to_string().contains("empty"));
    const _: () = assert!(MAX_DIMS >= 4096);
}
