// The wasm-bindgen module (`--target web`), initialised once per realm (page or worker).

import init, * as glue from "../wasm/webgpu_llm.js";
import { WebGpuUnavailableError, toLlmError } from "./errors.js";

let ready = null;

/**
 * Instantiate the wasm module once; later calls return the same promise (their `wasmUrl` is ignored).
 * @param {string | URL} [wasmUrl] where `webgpu_llm_bg.wasm` lives (default: beside the package's glue)
 */
export function initWasm(wasmUrl) {
  if (!ready) {
    const moduleOrPath = wasmUrl ?? new URL("../wasm/webgpu_llm_bg.wasm", import.meta.url);
    ready = init({ module_or_path: moduleOrPath }).then(
      () => undefined,
      (err) => {
        ready = null; // let a later call retry (e.g. after a network failure)
        throw toLlmError(err);
      },
    );
  }
  return ready;
}

/** A new wasm engine (creates the GPU device). */
export async function createWasmEngine(wasmUrl) {
  checkWebGpu();
  await initWasm(wasmUrl);
  try {
    return await glue.WasmEngine.create();
  } catch (err) {
    throw toLlmError(err);
  }
}

/** What the GPU offers, without loading a model. */
export async function gpuInfo(options = {}) {
  checkWebGpu();
  await initWasm(options.wasmUrl);
  try {
    return await glue.gpuInfo();
  } catch (err) {
    throw toLlmError(err);
  }
}

/** Fail fast, before fetching the wasm, where the browser has no WebGPU at all. */
function checkWebGpu() {
  if (!globalThis.navigator?.gpu) {
    const insecure = globalThis.isSecureContext === false;
    throw new WebGpuUnavailableError(
      insecure
        ? "WebGPU is unavailable because this page is not a secure context: serve it over https:// or from http://localhost"
        : "WebGPU is unavailable in this browser (navigator.gpu is undefined): use Chrome/Edge 113+, Safari 26+ or Firefox 141+ with WebGPU enabled",
    );
  }
}

/**
 * Bytes of this realm's wasm linear memory (it only grows, so this is the peak so far); 0 before the
 * module was instantiated.
 */
export function wasmMemoryBytes() {
  if (!ready || typeof glue.wasmMemoryBytes !== "function") return 0;
  try {
    return glue.wasmMemoryBytes();
  } catch {
    return 0; // not instantiated yet
  }
}
