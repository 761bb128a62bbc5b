//! webgpu-llm: LLM inference on WebGPU. Kernels in `shaders/`, their Rust wrappers in `ops`,
//! the GPU context in `gpu`, CPU-side quantization formats in `quant`.

pub mod chat;
pub mod detok;
pub mod embed;
pub mod engine;
pub mod gpu;
pub mod guide;
pub mod loader;
pub mod model;
pub mod ops;
pub mod quant;
pub mod sampling;
pub mod tools;

pub use gpu::{Context, ContextOptions, Counters, GpuError, Kernel};

#[cfg(target_arch = "wasm32")]
pub mod web;
