//! Shared test helpers: seeded random data, one GPU context per test binary (with and without
//! optional features), and a closeness check that names the worst element.
#![allow(dead_code)]

use std::sync::OnceLock;
use webgpu_llm::{Context, ContextOptions};

/// SplitMix64: small, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// Roughly normal (sum of uniforms), scaled.
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        s * std * 0.866
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A seed that differs per run unless WEBGPU_LLM_SEED is set; printed so failures can be replayed.
pub fn seed(name: &str) -> u64 {
    let seed = std::env::var("WEBGPU_LLM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("{name}: seed {seed} (set WEBGPU_LLM_SEED={seed} to replay)");
    seed
}

/// The context with every optional feature the device offers.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = Context::new_blocking(ContextOptions::default()).expect("a GPU adapter (install mesa-vulkan-drivers)");
        eprintln!("GPU: {}", c.describe());
        c
    })
}

/// The context with optional features turned off: the path every browser has.
pub fn ctx_portable() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking(ContextOptions { portable_only: true, ..Default::default() }).expect("a GPU adapter")
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

/// Assert |got - want| <= atol + rtol * |want| element-wise; the message names the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 || i == 0 {
            worst = (i, excess);
        }
    }
    let (i, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}: element {i} = {} but want {} (|diff| {:.3e} > atol {atol:.1e} + rtol {rtol:.1e}·|want|)",
        got[i],
        want[i],
        (got[i] as f64 - want[i]).abs()
    );
}
