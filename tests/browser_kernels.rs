//! The kernels in a real browser: headless Chromium's WebGPU (Tint compiles the WGSL, SwiftShader
//! runs it; no shader-f16, subgroups need `enable subgroups;`). Each op runs one small odd-sized
//! case against the same f64 references and tolerances as the native tests (tests/ops_*.rs state
//! why). Run by scripts/test.sh through wasm-bindgen-test-runner and chromedriver.
#![cfg(target_arch = "wasm32")]

#[path = "common/check.rs"]
mod check;
#[path = "common/reference.rs"]
mod reference;

use check::{assert_close, Rng};
use wasm_bindgen_test::*;
use webgpu_llm::gpu::{Context, ContextOptions, Kernel};
use webgpu_llm::ops;
use webgpu_llm::quant::{dequantize, quantize, WeightFormat};

wasm_bindgen_test_configure!(run_in_browser);

/// The device with its optional features (subgroups: the reductions take `subgroupAdd`), and one
/// without (`portable_only`: the shared-memory reductions), so every test runs both paths.
async fn contexts() -> Vec<Context> {
    let full = Context::new(ContextOptions::default()).await.expect("WebGPU adapter (--enable-unsafe-webgpu)");
    // Chromium offers `subgroups` (SwiftShader: size 4); wgpu maps it through vendor/wgpu's patch.
    assert!(full.caps.subgroups, "no subgroups on this adapter: {}", full.describe());
    let portable = Context::new(ContextOptions { portable_only: true, ..Default::default() }).await.unwrap();
    assert!(!portable.caps.subgroups);
    let ctxs = vec![full, portable];
    for c in &ctxs {
        web_sys::console::log_1(&format!("GPU: {}", c.describe()).into());
    }
    ctxs
}

fn rng(name: &str) -> Rng {
    let seed = js_sys::Date::now() as u64;
    web_sys::console::log_1(&format!("{name}: seed {seed}").into());
    Rng::new(seed)
}

fn upload(ctx: &Context, data: &[f32]) -> wgpu::Buffer {
    ctx.storage_init("test.input", bytemuck::cast_slice(data)).unwrap()
}

async fn run_read(ctx: &Context, kernels: &[Kernel], out: &wgpu::Buffer, len: usize) -> Vec<f32> {
    ctx.run(&kernels.iter().collect::<Vec<_>>());
    ctx.read_f32(out, len).await.unwrap()
}

#[wasm_bindgen_test]
async fn rmsnorm_in_browser() {
    for ctx in contexts().await {
        rmsnorm(&ctx).await;
    }
}

async fn rmsnorm(ctx: &Context) {
    let mut rng = rng("rmsnorm");
    let (rows, dim) = (5, 577);
    let x = rng.vec(rows * dim, 2.0);
    let w = rng.vec(dim, 1.5);
    let (xb, wb) = (upload(&ctx, &x), upload(&ctx, &w));
    let y = ctx.storage("y", (rows * dim * 4) as u64).unwrap();
    let k = ops::rmsnorm::rms_norm(&ctx, &xb, &wb, &y, rows as u32, dim as u32, 1e-5).unwrap();
    let got = run_read(&ctx, &[k], &y, rows * dim).await;
    assert_close("rmsnorm (browser)", &got, &reference::rmsnorm(&x, &w, rows, dim, 1e-5), 1e-5, 2e-5);
}

#[wasm_bindgen_test]
async fn matmul_in_browser() {
    for ctx in contexts().await {
        matmul(&ctx).await;
    }
}

async fn matmul(ctx: &Context) {
    let mut rng = rng("matmul");
    for format in WeightFormat::ALL {
        for m in [1usize, 7] {
            let (n, k) = (67, if format.is_k_quant() { 256 } else { 96 });
            let packed = quantize(format, &rng.vec(n * k, 1.0), n, k).unwrap();
            let w = ops::matmul::QuantMatrix::upload(&ctx, "w", &packed).unwrap();
            let x = rng.vec(m * k, 1.0);
            let y = ctx.storage("y", (m * n * 4) as u64).unwrap();
            let kernels =
                ops::matmul::matmul(&ctx, &upload(&ctx, &x), &w, &y, m as u32, ops::matmul::Epilogue::default())
                    .unwrap();
            let got = run_read(&ctx, &kernels, &y, m * n).await;
            let want = reference::matmul(&x, &dequantize(&packed).unwrap(), m, n, k);
            // f32 accumulation of ≤ 256 terms of size ≤ 1: ~3e-5 absolute covers any summation order.
            assert_close(&format!("matmul {format:?} m={m} (browser)"), &got, &want, 5e-5, 1e-5);
        }
    }
}

/// The int8-activation path (act_q8 + the integer-dot GEMV: dot4I8Packed in Tint) for every
/// format that has it, against the f64 product of W and x as act_q8 rounded it (read back), with
/// the tolerance of matmul_in_browser; and x's rounding itself within half a step of each block.
#[wasm_bindgen_test]
async fn int8_gemv_in_browser() {
    for ctx in contexts().await {
        int8_gemv(&ctx).await;
    }
}

async fn int8_gemv(ctx: &Context) {
    let mut rng = rng("int8 gemv");
    for format in WeightFormat::ALL.into_iter().filter(|&f| ops::matmul::q8_format(f)) {
        let (n, k) = (67, if format.is_k_quant() { 256 } else { 96 });
        let packed = quantize(format, &rng.vec(n * k, 1.0), n, k).unwrap();
        let w = ops::matmul::QuantMatrix::upload(&ctx, "w", &packed).unwrap();
        let x = rng.vec(k, 1.0);
        let xq = ops::act_q8::ActQ8::new(&ctx, "xq", 1, k as u32).unwrap();
        let y = ctx.storage("y", (n * 4) as u64).unwrap();
        let mut kernels = vec![ops::act_q8::act_q8(&ctx, &upload(&ctx, &x), &xq, 1, 0, None).unwrap()];
        kernels.extend(ops::matmul::matmul_q8(&ctx, &xq, &w, &y, ops::matmul::Epilogue::default()).unwrap());
        let got = run_read(&ctx, &kernels, &y, n).await;
        let words = ctx.read_u32(&xq.q, k / 4).await.unwrap();
        let s = ctx.read_f32(&xq.s, k / 32 * 4).await.unwrap();
        let xh: Vec<f32> =
            (0..k).map(|e| ((words[e / 4] >> (8 * (e % 4))) as u8 as i8) as f32 * s[e / 32 * 4]).collect();
        for (e, (&a, &b)) in x.iter().zip(&xh).enumerate() {
            assert!((a - b).abs() <= s[e / 32 * 4] * 0.5001, "{format:?}: x[{e}] = {a} rounded to {b}");
        }
        let want = reference::matmul(&xh, &dequantize(&packed).unwrap(), 1, n, k);
        assert_close(&format!("int8 gemv {format:?} (browser)"), &got, &want, 5e-5, 1e-5);
    }
}

#[wasm_bindgen_test]
async fn attention_in_browser() {
    for ctx in contexts().await {
        attention(&ctx).await;
    }
}

async fn attention(ctx: &Context) {
    use ops::attention::{attention, AttentionScratch, AttentionShape, KvCacheShape, KvDtype};
    let mut rng = rng("attention");
    let (n_heads, n_kv, hd) = (9usize, 3usize, 64usize);
    for (pos0, t, splits) in [(299usize, 1usize, Some(3u32)), (2, 5, None)] {
        let n_pos = pos0 + t;
        let kv = KvCacheShape {
            n_kv_heads: n_kv as u32,
            head_dim: hd as u32,
            capacity: n_pos as u32,
            dtype: KvDtype::F16,
            ring: false,
        };
        let k_rows = rng.vec(n_pos * n_kv * hd, 1.0);
        let v_rows = rng.vec(n_pos * n_kv * hd, 1.0);
        let q = rng.vec(t * n_heads * hd, 2.5);
        let ck = ctx.storage("k", kv.bytes()).unwrap();
        let cv = ctx.storage("v", kv.bytes()).unwrap();
        let write = ops::kv_write::kv_write(
            &ctx,
            &upload(&ctx, &k_rows),
            &upload(&ctx, &v_rows),
            &ck,
            &cv,
            &kv,
            0,
            n_pos as u32,
        )
        .unwrap();
        ctx.run(&[&write]);
        let out = ctx.storage("out", q.len() as u64 * 4).unwrap();
        let scratch = AttentionScratch::new(&ctx, t as u32, n_heads as u32, hd as u32, 8).unwrap();
        let shape = AttentionShape::new(n_heads as u32, kv);
        let kernels =
            attention(&ctx, &upload(&ctx, &q), &ck, &cv, &out, &shape, pos0 as u32, t as u32, &scratch, splits)
                .unwrap();
        let got = run_read(&ctx, &kernels, &out, q.len()).await;
        let held = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect::<Vec<_>>();
        let want = reference::attention(
            &f64s(&q),
            &held(&k_rows),
            &held(&v_rows),
            n_heads,
            n_kv,
            hd,
            pos0,
            t,
            shape.scale as f64,
            0,
            0.0,
        );
        assert_close(&format!("attention pos0={pos0} t={t} (browser)"), &got, &want, 3e-5, 3e-5);
    }
}

#[wasm_bindgen_test]
async fn rope_swiglu_add_argmax_in_browser() {
    for ctx in contexts().await {
        rope_swiglu_add_argmax(&ctx).await;
    }
}

async fn rope_swiglu_add_argmax(ctx: &Context) {
    use ops::rope::{RopeConfig, RopePairing, RopeTable};
    let mut rng = rng("rope/swiglu/add/argmax");

    let (n_heads, t, pos0) = (9usize, 3usize, 100_000u32);
    let cfg = RopeConfig::new(64, 500_000.0, RopePairing::Half);
    let table = RopeTable::new(&ctx, &cfg, 131_072).unwrap();
    let x = rng.vec(t * n_heads * 64, 1.0);
    let xb = upload(&ctx, &x);
    let k = ops::rope::rope(&ctx, &xb, &table, n_heads as u32, t as u32, pos0).unwrap();
    let got = run_read(&ctx, &[k], &xb, x.len()).await;
    let inv = cfg.inv_freq(131_072).unwrap();
    let want = reference::rope(&x, &cfg, &inv, 1.0, n_heads, t, pos0);
    assert_close("rope (browser)", &got, &want, 2e-6, 0.0);

    let f = 67;
    let (g, u) = (rng.vec(2 * f, 8.0), rng.vec(2 * f, 1.0));
    let out = ctx.storage("out", (2 * f * 4) as u64).unwrap();
    let k = ops::swiglu::swiglu(&ctx, &upload(&ctx, &g), &upload(&ctx, &u), &out, 2, f as u32, ops::swiglu::Act::Silu)
        .unwrap();
    let got = run_read(&ctx, &[k], &out, 2 * f).await;
    let want: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64).collect();
    assert_close("swiglu (browser)", &got, &want, 1e-30, 2e-6);

    let (a, b) = (rng.vec(1001, 1.0), rng.vec(1001, 1.0));
    let ab = upload(&ctx, &a);
    let k = ops::add::add_inplace(&ctx, &ab, &upload(&ctx, &b), 1001).unwrap();
    let got = run_read(&ctx, &[k], &ab, 1001).await;
    let want: Vec<f64> = a.iter().zip(&b).map(|(&a, &b)| (a + b) as f64).collect();
    assert_close("add (browser)", &got, &want, 0.0, 0.0);

    let (rows, n) = (2usize, 49_157usize);
    let logits = rng.vec(rows * n, 10.0);
    let ids = ctx.storage("ids", (rows * 4) as u64).unwrap();
    let kernels = ops::argmax::argmax(&ctx, &upload(&ctx, &logits), &ids, rows as u32, n as u32).unwrap();
    ctx.run(&kernels.iter().collect::<Vec<_>>());
    let got = ctx.read_u32(&ids, rows).await.unwrap();
    let want: Vec<u32> = (0..rows).map(|r| reference::argmax(&logits[r * n..(r + 1) * n])).collect();
    assert_eq!(got, want, "argmax (browser)");
}

#[wasm_bindgen_test]
async fn embedding_in_browser() {
    for ctx in contexts().await {
        embedding(&ctx).await;
    }
}

async fn embedding(ctx: &Context) {
    let mut rng = rng("embedding");
    let vocab = 101usize;
    for format in [WeightFormat::Q8, WeightFormat::Q4Asym, WeightFormat::F16, WeightFormat::Q8Asym, WeightFormat::Q6K] {
        let dim = if format.is_k_quant() { 256 } else { 96 };
        let packed = quantize(format, &rng.vec(vocab * dim, 1.0), vocab, dim).unwrap();
        let table = ops::matmul::QuantMatrix::upload(&ctx, "table", &packed).unwrap();
        let ids = [0u32, 57, 100];
        let idb = ctx.storage_init("ids", bytemuck::cast_slice(&ids)).unwrap();
        let out = ctx.storage("out", (ids.len() * dim * 4) as u64).unwrap();
        let kernels = ops::embedding::embedding(&ctx, &table, &idb, &out, ids.len() as u32, 1.0).unwrap();
        let got = run_read(&ctx, &kernels, &out, ids.len() * dim).await;
        let rows = dequantize(&packed).unwrap();
        let want: Vec<f64> =
            ids.iter().flat_map(|&i| rows[i as usize * dim..][..dim].iter().map(|&v| v as f64)).collect();
        // the shader computes each value exactly as the CPU dequantization does
        assert_close(&format!("embedding {format:?} (browser)"), &got, &want, 0.0, 0.0);
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
