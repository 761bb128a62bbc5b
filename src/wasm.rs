//! Browser entry points (wasm-bindgen). The npm package in `pkg/` wraps these; for now they expose
//! the GPU context so a page can check what the device offers.

use wasm_bindgen::prelude::*;

use crate::gpu::{Context, ContextOptions};

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// What the GPU offers, as a JS object: `{ adapter, backend, maxBindingBytes, shaderF16, subgroups, timestampQuery }`.
#[wasm_bindgen(js_name = gpuInfo)]
pub async fn gpu_info() -> Result<JsValue, JsValue> {
    let ctx =
        Context::new(ContextOptions::default()).await.map_err(|e| JsValue::from(js_sys::Error::new(&e.to_string())))?;
    let info = GpuInfo {
        adapter: ctx.info.name.clone(),
        backend: format!("{:?}", ctx.info.backend),
        max_binding_bytes: ctx.max_binding_bytes() as f64,
        shader_f16: ctx.caps.shader_f16,
        subgroups: ctx.caps.subgroups,
        timestamp_query: ctx.caps.timestamp_query,
        description: ctx.describe(),
    };
    serde_wasm_bindgen::to_value(&info).map_err(JsValue::from)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GpuInfo {
    adapter: String,
    backend: String,
    max_binding_bytes: f64,
    shader_f16: bool,
    subgroups: bool,
    timestamp_query: bool,
    description: String,
}
