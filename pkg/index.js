// webgpu-llm: run LLMs in the browser on WebGPU. See README.md for the API; index.d.ts for types.

export { createEngine, Engine } from "./src/engine.js";
export { createWorkerEngine } from "./src/worker-client.js";
export { GenerationStream } from "./src/stream.js";
export { gpuInfo, wasmMemoryBytes } from "./src/wasm.js";
export { isModelCached, deleteCachedModel, clearCache } from "./src/offline.js";
export { CACHE_NAME, PART_BYTES } from "./src/cache.js";
export {
  ErrorCode,
  WebGpuLlmError,
  WebGpuUnavailableError,
  FeatureMissingError,
  LimitTooSmallError,
  OutOfMemoryError,
  BadModelError,
  NetworkError,
  QuotaError,
  AbortedError,
  BusyError,
  ContextOverflowError,
  InputTooLongError,
  DeviceLostError,
  BadRequestError,
  InternalError,
} from "./src/errors.js";
