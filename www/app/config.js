// The one place that says where things are. Everything else (app.js, the engine worker and, through
// its registration URL, the service worker) takes these from here.

/** The npm package's folder (index.js, src/, wasm/). With a bundler or an npm install, point it at node_modules/webgpu-llm/. */
export const PKG_URL = new URL("../../pkg/", import.meta.url).href;

/** The model offered first: SmolLM2-135M-Instruct, Q4_1 GGUF (`scripts/fetch-model.sh` puts it in /models/). */
export const DEFAULT_MODEL = {
  url: new URL("../../models/SmolLM2-135M-Instruct.Q4_1.gguf", import.meta.url).href,
  name: "SmolLM2-135M-Instruct",
  detail: "135M parameters, Q4_1 GGUF, 98 MB",
  size: "98 MB",
};

/** Prefix of this app's localStorage keys. */
export const STORAGE_PREFIX = "webgpu-llm-app:";
