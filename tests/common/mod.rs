//! Shared native test helpers: one GPU context per test binary (with and without optional
//! features), upload/readback, and (from `check` and `reference`) seeded data, closeness checks
//! and the f64 CPU references.
#![allow(dead_code)]

pub mod check;
pub mod fixture;
pub mod reference;
#[allow(unused_imports)] // not every test binary uses every helper
pub use check::*;

use std::sync::OnceLock;
use webgpu_llm::{Context, ContextOptions};

/// A seed that differs per run unless WEBGPU_LLM_SEED is set; printed so failures can be replayed.
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("WEBGPU_LLM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("{name}: seed {seed} (set WEBGPU_LLM_SEED={seed} to replay)");
    seed
}

/// The context with every optional feature the device offers, and the m = 1 matmul strategy the
/// device prefers.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = Context::new_blocking(ContextOptions::default()).expect("a GPU adapter (install mesa-vulkan-drivers)");
        eprintln!("GPU: {}", c.describe());
        c
    })
}

/// The context with optional features turned off (the path every browser has), and the m = 1
/// matmul strategy `ctx()` does not use, so `contexts()` covers both.
pub fn ctx_portable() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let row_gemv = Some(!ctx().caps.row_gemv);
        // and the other decode activations (f32 / int8), so both paths run everywhere
        let int8_dot = Some(!ctx().caps.int8_dot);
        Context::new_blocking(ContextOptions { portable_only: true, row_gemv, int8_dot, ..Default::default() })
            .expect("a GPU adapter")
    })
}

/// Both contexts, to run a test on the optional-feature path and the portable path.
pub fn contexts() -> [(&'static str, &'static Context); 2] {
    [("features", ctx()), ("portable", ctx_portable())]
}

pub fn upload_f32(ctx: &Context, data: &[f32]) -> wgpu::Buffer {
    ctx.storage_init("test.input", bytemuck::cast_slice(data)).unwrap()
}

pub fn upload_u32(ctx: &Context, data: &[u32]) -> wgpu::Buffer {
    ctx.storage_init("test.input", bytemuck::cast_slice(data)).unwrap()
}

pub fn read_f32(ctx: &Context, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    pollster::block_on(ctx.read_f32(buf, len)).unwrap()
}

pub fn read_u32(ctx: &Context, buf: &wgpu::Buffer, len: usize) -> Vec<u32> {
    pollster::block_on(ctx.read_u32(buf, len)).unwrap()
}

/// The default model, SmolLM2-135M-Instruct Q4_1 GGUF (scripts/setup.sh fetches it; tests need it).
pub fn smollm2_path() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/fetch-model.sh", p.display());
    p
}

/// Seconds since the first call: a clock for `Model::clock` (the engine times masks with it).
pub fn now() -> f64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// An engine over the tiny random fixture `fixture` (f16 weights, `context` positions) with the real
/// tokenizer and chat template in `models/tokenizers/<tokenizer>` (`None`: the fixture's own), timed by [`now`].
pub fn tiny_engine(fixture: &str, tokenizer: Option<&str>, context: u32) -> webgpu_llm::engine::Engine {
    use webgpu_llm::model::{Config, CpuTensors, Model, QuantPolicy, StateOptions};
    let fx = fixture::Fixture::load(fixture);
    let cfg = Config::from_hf(&fx.config).unwrap();
    let tensors = fx
        .weights()
        .into_iter()
        .map(|(name, shape, v)| (name, (shape, v.iter().map(|x| x.to_f32()).collect())))
        .collect();
    let mut src = CpuTensors { tensors, policy: QuantPolicy::F16 };
    let opts =
        StateOptions { context, max_batch: 64, kv_dtype: webgpu_llm::ops::attention::KvDtype::F16, all_logits: false };
    let model = Model::new(ctx(), cfg, &mut src, opts).unwrap();
    let dir = match tokenizer {
        Some(t) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tokenizers").join(t),
        None => fx.tokenizer_dir.clone(),
    };
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let tok_config = String::from_utf8(read("tokenizer_config.json")).unwrap();
    let mut engine = webgpu_llm::engine::Engine::new(model, &read("tokenizer.json"), Some(&tok_config)).unwrap();
    engine.model.clock = now;
    engine
}
