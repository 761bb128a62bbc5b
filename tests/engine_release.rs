//! Unloading frees the GPU memory: `Engine::release` returns every byte the engine created
//! (weights, KV cache, activations, scratch, staging) to the context's live count, and repeated
//! open → generate → release cycles neither grow the live bytes nor the per-cycle allocations.
//! Its own test binary with its own context, so no other test's buffers share the counters.

use std::path::PathBuf;

use webgpu_llm::engine::{open_gguf, GenerateOptions, OpenOptions};
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::{Context, ContextOptions};

#[test]
fn release_returns_every_byte_and_cycles_do_not_grow() {
    std::fs::create_dir_all("/tmp/webgpu-llm-xdg").ok();
    let ctx = Context::new_blocking(ContextOptions::default()).expect("a GPU adapter");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant/tiny-q4_k_m.gguf");
    let before = ctx.counters();
    let mut per_cycle = Vec::new();
    for cycle in 0..4 {
        let start = ctx.counters();
        let mut engine =
            open_gguf(&ctx, &path, OpenOptions { context: Some(64), kv_dtype: KvDtype::F16, max_batch: 16 }).unwrap();
        let opts = GenerateOptions { max_tokens: 8, ..Default::default() };
        for prompt in [vec![1u32, 5, 9, 2, 7], vec![3, 4, 8]] {
            pollster::block_on(engine.generate(&ctx, &prompt, &opts, &mut |_| true)).unwrap();
        }
        let loaded = ctx.counters();
        assert!(loaded.buffer_bytes_live > start.buffer_bytes_live, "the engine holds GPU memory");
        engine.release(&ctx);
        let after = ctx.counters();
        assert_eq!(
            after.buffer_bytes_live,
            before.buffer_bytes_live,
            "cycle {cycle}: {} bytes still live after release (held {} while loaded)",
            after.buffer_bytes_live - before.buffer_bytes_live,
            loaded.buffer_bytes_live - start.buffer_bytes_live
        );
        per_cycle.push(after.since(&start));
    }
    // Every cycle does the same work: the same buffers and bytes created (nothing cached across
    // engines grows, nothing leaks into the next cycle's allocations).
    for c in &per_cycle[1..] {
        assert_eq!(
            (c.buffers_created, c.buffer_bytes_created),
            (per_cycle[1].buffers_created, per_cycle[1].buffer_bytes_created)
        );
    }
}

/// The loader's out-of-memory check before the download (`probe_state`) allocates exactly what
/// the engine's state will (the same buffers, so the same error would come from the same
/// allocation) and frees it all again.
#[test]
fn probe_state_allocates_what_the_state_will_and_frees_it() {
    use webgpu_llm::engine::{kv_cache_bytes, probe_state};
    std::fs::create_dir_all("/tmp/webgpu-llm-xdg").ok();
    let ctx = Context::new_blocking(ContextOptions::default()).expect("a GPU adapter");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant/tiny-q4_k_m.gguf");
    let opts = OpenOptions { context: Some(96), kv_dtype: KvDtype::F32, max_batch: 8 };
    let engine = open_gguf(&ctx, &path, opts).unwrap();
    let mut seen = std::collections::HashSet::new();
    let state_bytes: u64 = engine
        .model
        .state
        .buffers()
        .into_iter()
        .filter(|b| seen.insert(*b) && !b.usage().contains(wgpu::BufferUsages::UNIFORM))
        .map(|b| b.size())
        .sum();
    let before = ctx.counters();
    let kv = probe_state(&ctx, &engine.model.config, &opts).unwrap();
    let after = ctx.counters();
    assert_eq!(kv, kv_cache_bytes(&engine.model.config, &engine.model.state.opts));
    assert_eq!(after.buffer_bytes_live, before.buffer_bytes_live, "the probe freed what it allocated");
    assert_eq!(after.buffer_bytes_created - before.buffer_bytes_created, state_bytes, "the probe allocated the state");
    assert!(state_bytes > kv, "the state holds the KV cache and the activations");
    engine.release(&ctx);
}
