//! Embedding lookup in every weight format, whole and split into chunks, vs `dequantize_row`.
//! Tolerance: none. The shader computes each value exactly as the CPU reference does (a bitcast, an
//! f16 unpack, q·d exact in f32, or q·d + m rounded once), so the output must be bit-identical.

mod common;
use common::*;
use std::sync::OnceLock;
use webgpu_llm::ops::embedding::embedding;
use webgpu_llm::ops::matmul::QuantMatrix;
use webgpu_llm::quant::{dequantize_row, quantize, WeightFormat};
use webgpu_llm::{Context, ContextOptions};

/// Splits the test tables (300 rows) into ≥ 3 chunks in every format.
fn ctx_split() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking(ContextOptions { max_binding_bytes: Some(4096), ..Default::default() })
            .expect("a GPU adapter")
    })
}

#[test]
fn embedding_matches_dequantized_rows() {
    let mut rng = Rng::new(seed("embedding"));
    let vocab = 300usize;
    for (name, ctx) in [("whole", ctx()), ("split", ctx_split())] {
        for format in WeightFormat::ALL {
            // quantized: whole groups (an odd count, so scale pairs straddle rows); float: ragged rows
            let dim = if format.is_k_quant() {
                512
            } else if format.is_quantized() {
                96
            } else {
                67
            };
            let table: Vec<f32> = (0..vocab * dim).map(|_| rng.normal(0.5)).collect();
            let packed = quantize(format, &table, vocab, dim).unwrap();
            let w = QuantMatrix::upload(ctx, "table", &packed).unwrap();
            if name == "split" {
                assert!(w.chunks.len() >= 3, "{format:?}: {} chunks", w.chunks.len());
            }
            for t in [1usize, 7] {
                let mut ids: Vec<u32> = (0..t).map(|_| rng.below(vocab as u64) as u32).collect();
                // t = 1 (forward order): row 0, which the later chunks must leave alone;
                // t = 7 (reverse order): both ends, and ids past the table
                ids[0] = 0;
                if t == 7 {
                    ids[1] = vocab as u32 - 1;
                    ids[3] = vocab as u32;
                    ids[5] = u32::MAX;
                }
                // t = 7 also scales (Gemma's √hidden): one f32 multiply, exact on both sides
                let scale = if t == 7 { (96f32).sqrt() } else { 1.0 };
                let mut want = Vec::with_capacity(t * dim);
                for &id in &ids {
                    if (id as usize) < vocab {
                        want.extend(dequantize_row(&packed, id as usize).unwrap().iter().map(|&v| (v * scale) as f64));
                    } else {
                        want.extend(std::iter::repeat_n(0.0, dim));
                    }
                }
                let idb = upload_u32(ctx, &ids);
                // NaN-filled, so an element no chunk writes fails the test
                let out = upload_f32(ctx, &vec![f32::NAN; t * dim]);
                let kernels = embedding(ctx, &w, &idb, &out, t as u32, scale).unwrap();
                // chunk kernels are independent: run them in reverse once to prove no order is assumed
                let mut order: Vec<_> = kernels.iter().collect();
                if t == 7 {
                    order.reverse();
                }
                ctx.run(&order);
                let got = read_f32(ctx, &out, t * dim);
                assert_close(&format!("embedding {name} {format:?} t={t} ids={ids:?}"), &got, &want, 0.0, 0.0);
            }
        }
    }
}

#[test]
fn embedding_rejects_short_buffers() {
    let ctx = ctx();
    let packed = quantize(WeightFormat::Q8, &[0.5; 4 * 32], 4, 32).unwrap();
    let w = QuantMatrix::upload(ctx, "table", &packed).unwrap();
    let ids = upload_u32(ctx, &[0, 1]);
    let out = ctx.storage("out", 2 * 32 * 4).unwrap();
    let err = embedding(ctx, &w, &ids, &out, 3, 1.0).err().expect("ids too short").to_string();
    assert!(err.contains("ids"), "{err}");
    let short = ctx.storage("out", 2 * 32 * 4 - 4).unwrap();
    let err = embedding(ctx, &w, &ids, &short, 2, 1.0).err().expect("out too short").to_string();
    assert!(err.contains("out"), "{err}");
    assert!(embedding(ctx, &w, &ids, &out, 0, 1.0).is_err());
    assert!(embedding(ctx, &w, &ids, &out, 2, f32::INFINITY).is_err());
}
