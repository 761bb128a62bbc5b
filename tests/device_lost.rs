//! A lost device (driver reset, `destroy`) is `GpuError::DeviceLost` from the next call that
//! reads back, never a hang or a panic, and a new context runs the model again. The browser side
//! (DEVICE_LOST, then a new engine from the cache) is in tests/browser/run.mjs.

use std::path::PathBuf;

use webgpu_llm::engine::{open_gguf, EngineError, GenerateOptions, OpenOptions};
use webgpu_llm::ops::attention::KvDtype;
use webgpu_llm::{Context, ContextOptions, GpuError};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kquant/tiny-q4_k_m.gguf")
}

#[test]
fn a_lost_device_is_a_typed_error_and_a_new_context_recovers() {
    std::fs::create_dir_all("/tmp/webgpu-llm-xdg").ok();
    let opts = OpenOptions { context: Some(32), kv_dtype: KvDtype::F16, max_batch: 16 };
    let gen = GenerateOptions { max_tokens: 4, ..Default::default() };
    let prompt = [1u32, 5, 9];

    let ctx = Context::new_blocking(ContextOptions::default()).expect("a GPU adapter");
    let mut engine = open_gguf(&ctx, &fixture(), opts.clone()).unwrap();
    let before = pollster::block_on(engine.generate(&ctx, &prompt, &gen, &mut |_| true)).unwrap();
    assert!(ctx.lost().is_none());

    ctx.device.destroy();
    for attempt in 0..2 {
        match pollster::block_on(engine.generate(&ctx, &prompt, &gen, &mut |_| true)) {
            Err(EngineError::Gpu(GpuError::DeviceLost(why))) => assert!(!why.is_empty()),
            other => panic!("generate #{attempt} on a destroyed device: {:?}", other.map(|s| s.generated)),
        }
    }
    assert!(ctx.lost().is_some(), "the device-lost callback did not run");

    let ctx2 = Context::new_blocking(ContextOptions::default()).expect("a GPU adapter");
    let mut engine2 = open_gguf(&ctx2, &fixture(), opts).unwrap();
    let after = pollster::block_on(engine2.generate(&ctx2, &prompt, &gen, &mut |_| true)).unwrap();
    assert_eq!(after.generated, before.generated);
}
