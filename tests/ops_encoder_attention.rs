//! Bidirectional attention over a padded batch (BERT-family encoders) vs an f64 CPU reference.
//!
//! Tolerance 3e-5 absolute + 3e-5 relative, as tests/ops_attention.rs and for the same reasons
//! (the kernel is `attend`'s online softmax): the output is a convex combination of V values
//! (|v| < 4), scores are f32 dots of ≤ 256 terms kept in base 2 (~±30), their rounding is
//! ~sqrt(256)·2⁻²⁴·|partial sum| ≈ 2e-6 and exp2 may be off 3 + 2|x| ulp (≤ ~4e-6 relative), so a
//! conforming device stays near 1e-5. A wrong head mapping, scale, sequence offset or rescale errs
//! by 1e-2 and more.
//!
//! Every padded row (i ≥ lens[b]) holds NaN in all of q | k | v: reading a padded key or value
//! (a missing mask) makes a real row's output NaN, which `assert_close` rejects, and padded rows'
//! outputs must be exactly 0 (the output buffer starts as NaN). A sequence run alone (batch 1,
//! seq = its length) must give the same bits as inside the batch: the kernel's arithmetic depends
//! only on the sequence's own rows.

mod common;
use common::reference::encoder_attention as reference;
use common::*;
use webgpu_llm::ops::encoder_attention::{encoder_attention, EncoderAttentionShape, MAX_HEAD_DIM};
use webgpu_llm::Context;

const ATOL: f64 = 3e-5;
const RTOL: f64 = 3e-5;

/// One test at a time on the GPU: without a Vulkan driver wgpu falls back to GL (llvmpipe), whose
/// context lock panics ("Could not lock adapter context") when another thread holds it over a
/// second, as a long dispatch here does.
fn gpu_turn() -> std::sync::MutexGuard<'static, ()> {
    static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GPU.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the op; returns the output `[batch·seq, q_dim]`.
fn run(ctx: &Context, qkv: &[f32], lens: &[u32], shape: &EncoderAttentionShape) -> Vec<f32> {
    let rows = (shape.batch * shape.seq) as usize;
    let q_dim = (shape.n_heads * shape.head_dim) as usize;
    let (qb, lb) = (upload_f32(ctx, qkv), upload_u32(ctx, lens));
    let out = upload_u32(ctx, &vec![u32::MAX; rows * q_dim]); // NaN: unwritten outputs fail
    let kernels = encoder_attention(ctx, &qb, &lb, &out, shape).unwrap();
    ctx.run(&kernels.iter().collect::<Vec<_>>());
    read_f32(ctx, &out, rows * q_dim)
}

/// One case: random q | k | v for the real rows, NaN in the padding; checks the reference, the
/// zeros of padded rows and each sequence alone.
fn check(ctx: &Context, name: &str, rng: &mut Rng, heads: (u32, u32, u32), seq: u32, lens: &[u32], scale: Option<f32>) {
    let (n_heads, n_kv_heads, head_dim) = heads;
    let batch = lens.len() as u32;
    let scale = scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
    let shape = EncoderAttentionShape { n_heads, n_kv_heads, head_dim, batch, seq, scale };
    let row_elems = shape.row_elems() as usize;
    let q_dim = (n_heads * head_dim) as usize;
    let seq_u = seq as usize;
    let mut qkv = vec![f32::NAN; batch as usize * seq_u * row_elems];
    for (b, &len) in lens.iter().enumerate() {
        for i in 0..len as usize {
            let row = &mut qkv[(b * seq_u + i) * row_elems..][..row_elems];
            // q wider than k so scores spread over ~±10 and the softmax is far from uniform
            for (c, v) in row.iter_mut().enumerate() {
                *v = rng.normal(if c < q_dim { 2.5 } else { 1.0 });
            }
        }
    }
    let got = run(ctx, &qkv, lens, &shape);
    let want = reference(
        &qkv,
        lens,
        n_heads as usize,
        n_kv_heads as usize,
        head_dim as usize,
        batch as usize,
        seq_u,
        scale as f64,
    );
    let what = format!("encoder_attention {name} {n_heads}/{n_kv_heads} hd={head_dim} seq={seq} lens={lens:?}");
    assert_close(&what, &got, &want, ATOL, RTOL); // padded rows: want 0, so NaN fails too
    for (b, &len) in lens.iter().enumerate() {
        let pad = &got[(b * seq_u + len as usize) * q_dim..(b + 1) * seq_u * q_dim];
        assert!(pad.iter().all(|&v| v == 0.0), "{what}: padded rows of sequence {b} are not all 0");
        // alone: batch 1, no padding
        let alone_shape = EncoderAttentionShape { batch: 1, seq: len, ..shape };
        let rows = (b * seq_u) * row_elems..(b * seq_u + len as usize) * row_elems;
        let alone = run(ctx, &qkv[rows], &[len], &alone_shape);
        let batched = &got[b * seq_u * q_dim..][..len as usize * q_dim];
        let same = alone.iter().zip(batched).all(|(a, g)| a.to_bits() == g.to_bits());
        assert!(same, "{what}: sequence {b} alone differs from the batch");
    }
}

#[test]
fn encoder_attention_matches_reference() {
    let _gpu = gpu_turn();
    let mut rng = Rng::new(seed("encoder_attention"));
    for (name, ctx) in contexts() {
        // BERT-base: 12 × 64, lengths 1 and = seq, more keys than a tile (64)
        check(ctx, name, &mut rng, (12, 12, 64), 70, &[70, 1, 33, 65], None);
        // GQA and every head_dim the brief names, an odd one, and a scale that is not 1/√d
        check(ctx, name, &mut rng, (8, 2, 32), 130, &[1, 130, 64, 100], None);
        check(ctx, name, &mut rng, (6, 3, 128), 40, &[40, 17], Some(0.05));
        check(ctx, name, &mut rng, (4, 1, 256), 129, &[129, 2, 128], None);
        check(ctx, name, &mut rng, (3, 3, 33), 9, &[9, 5, 1], None);
        check(ctx, name, &mut rng, (2, 1, 255), 5, &[5, 4], None);
    }
}

/// A long padded length: indices at seq = 8192 and a sequence of many key tiles.
#[test]
fn encoder_attention_long_sequences() {
    let _gpu = gpu_turn();
    let mut rng = Rng::new(seed("encoder_attention_long"));
    let ctx = ctx();
    check(ctx, "long", &mut rng, (2, 1, 32), 8192, &[3, 1000], None);
}

/// Rows × heads beyond one grid dimension (65535 workgroups): the fold into (x, y) reaches all.
#[test]
fn encoder_attention_folds_many_workgroups() {
    let _gpu = gpu_turn();
    let mut rng = Rng::new(seed("encoder_attention_grid"));
    let ctx = ctx();
    check(
        ctx,
        "grid",
        &mut rng,
        (16, 16, 4),
        256,
        &[1, 2, 3, 4, 5, 6, 7, 8, 200, 9, 10, 11, 12, 13, 14, 15, 256],
        None,
    );
}

#[test]
fn encoder_attention_rejects_bad_arguments() {
    let _gpu = gpu_turn();
    let ctx = ctx();
    let ok = EncoderAttentionShape { n_heads: 4, n_kv_heads: 2, head_dim: 8, batch: 2, seq: 3, scale: 0.3 };
    let buf = |n: u64| ctx.storage("t", 4 * n).unwrap();
    let (qkv, lens, out) = (buf(6 * 8 * 8), buf(2), buf(6 * 4 * 8));
    let err = |s: EncoderAttentionShape, q: &wgpu::Buffer, l: &wgpu::Buffer, o: &wgpu::Buffer, what: &str| {
        let e = encoder_attention(ctx, q, l, o, &s).err().unwrap_or_else(|| panic!("{what}: accepted"));
        e.to_string()
    };
    assert!(encoder_attention(ctx, &qkv, &lens, &out, &ok).is_ok());
    err(EncoderAttentionShape { n_heads: 0, ..ok }, &qkv, &lens, &out, "no heads");
    err(EncoderAttentionShape { n_kv_heads: 0, ..ok }, &qkv, &lens, &out, "no kv heads");
    let e = err(EncoderAttentionShape { n_heads: 3, ..ok }, &qkv, &lens, &out, "3 heads over 2 kv heads");
    assert!(e.contains("n_kv_heads"), "{e}");
    err(EncoderAttentionShape { head_dim: 0, ..ok }, &qkv, &lens, &out, "head_dim 0");
    let big = |heads: u64| buf(6 * heads * (MAX_HEAD_DIM as u64 + 1));
    let e = err(
        EncoderAttentionShape { head_dim: MAX_HEAD_DIM + 1, ..ok },
        &big(8),
        &lens,
        &big(4),
        "head_dim past the maximum",
    );
    assert!(e.contains("head_dim"), "{e}");
    err(EncoderAttentionShape { batch: 0, ..ok }, &qkv, &lens, &out, "empty batch");
    err(EncoderAttentionShape { seq: 0, ..ok }, &qkv, &lens, &out, "seq 0");
    err(EncoderAttentionShape { scale: f32::NAN, ..ok }, &qkv, &lens, &out, "scale NaN");
    assert!(err(ok, &buf(6 * 8 * 8 - 1), &lens, &out, "qkv short").contains("qkv"));
    assert!(err(ok, &qkv, &buf(1), &out, "lens short").contains("lens"));
    assert!(err(ok, &qkv, &lens, &buf(6 * 4 * 8 - 1), "out short").contains("out"));
    err(ok, &qkv, &lens, &qkv, "out = qkv");
}
