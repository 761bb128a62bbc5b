// createWorkerEngine: the same Engine, with the wasm engine in a dedicated Web Worker (worker.js).
// WorkerCore has LocalCore's methods but forwards them as small messages; callbacks (onProgress,
// token events) stay on this thread, AbortSignals become "cancel" messages.

import { Engine, checkOptions } from "./engine.js";
import { normalizeModel } from "./loader.js";
import { BadRequestError, InternalError, abortError, errorFromJSON, throwIfAborted } from "./errors.js";

/** Options that travel to the worker (everything but functions, signals and the worker itself). */
const FORWARDED = ["cache", "context", "kv", "maxBatch", "sha256", "format", "modelId"];

/**
 * Load a model in a dedicated module Web Worker and return an Engine that talks to it.
 * @param {import("../index.js").WorkerEngineOptions} options
 */
export async function createWorkerEngine(options) {
  const opts = checkOptions(options);
  throwIfAborted(opts.signal);
  const base = globalThis.location?.href;
  const forwarded = { model: normalizeModel(opts.model, base) };
  for (const k of FORWARDED) if (opts[k] !== undefined) forwarded[k] = opts[k];
  if (opts.wasmUrl !== undefined) forwarded.wasmUrl = new URL(opts.wasmUrl, base).href;
  if (opts.worker !== undefined && typeof opts.worker?.postMessage !== "function") {
    throw new BadRequestError("createWorkerEngine: `worker` must be a Worker running webgpu-llm/worker (type: \"module\")");
  }
  const own = !opts.worker;
  const worker = opts.worker ?? new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "webgpu-llm" });
  const core = new WorkerCore(worker, own);
  try {
    const info = await core.load(forwarded, opts.onProgress, opts.signal);
    return new Engine(core, info);
  } catch (err) {
    core.dispose();
    throw err;
  }
}

export class WorkerCore {
  #worker;
  #own;
  #nextId = 1;
  #pending = new Map(); // id → {resolve, reject, onEvent?, onProgress?}
  #dead = null; // the error every call gets once the worker failed

  constructor(worker, own) {
    this.#worker = worker;
    this.#own = own;
    this.onMessage = (ev) => this.#receive(ev.data);
    this.onError = (ev) => {
      const where = ev.filename ? ` (${ev.filename}:${ev.lineno})` : "";
      this.#fail(
        new InternalError(
          ev.message
            ? `the webgpu-llm worker failed: ${ev.message}${where}`
            : "the webgpu-llm worker failed to start: check that the package's src/worker.js and wasm/ files are served (module workers need a same-origin URL)",
        ),
      );
    };
    this.onMessageError = () => this.#fail(new InternalError("a message from the webgpu-llm worker could not be deserialized"));
    worker.addEventListener("message", this.onMessage);
    worker.addEventListener("error", this.onError);
    worker.addEventListener("messageerror", this.onMessageError);
  }

  load(options, onProgress, signal) {
    return this.#call({ type: "load", options, progress: typeof onProgress === "function" }, { onProgress, signal, load: true });
  }

  generate(input, options, onEvent, signal) {
    return this.#call({ type: "generate", input, options }, { onEvent, signal });
  }

  abort() {
    if (!this.#dead) this.#worker.postMessage({ type: "abort" });
  }

  resetChat() {
    return this.#method("resetChat");
  }

  async unload() {
    try {
      await this.#method("unload");
    } finally {
      this.dispose();
    }
  }

  embed(inputs, options) {
    return this.#method("embed", inputs, options);
  }

  encode(text, addSpecialTokens) {
    return this.#method("encode", text, addSpecialTokens);
  }

  decode(ids) {
    return this.#method("decode", ids);
  }

  applyChatTemplate(messages, tools, toolChoice, kwargs) {
    return this.#method("applyChatTemplate", messages, tools, toolChoice, kwargs);
  }

  wasmMemoryBytes() {
    return this.#method("wasmMemoryBytes");
  }

  /** Stop listening; terminate the worker if we created it. */
  dispose() {
    this.#worker.removeEventListener("message", this.onMessage);
    this.#worker.removeEventListener("error", this.onError);
    this.#worker.removeEventListener("messageerror", this.onMessageError);
    if (this.#own) this.#worker.terminate();
    this.#fail(new InternalError("the engine's worker was shut down"));
  }

  #method(method, ...args) {
    return this.#call({ type: "call", method, args }, {});
  }

  #call(message, { onEvent, onProgress, signal, load }) {
    if (this.#dead) return Promise.reject(this.#dead);
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      let onAbort;
      const done = () => signal?.removeEventListener("abort", onAbort);
      this.#pending.set(id, {
        resolve: (v) => (done(), resolve(v)),
        reject: (e) => (done(), reject(e)),
        onEvent,
        onProgress,
      });
      onAbort = () => {
        this.#worker.postMessage({ type: "cancel", id });
        if (load && this.#own) {
          // A load is abandoned at once: the worker (and its half-loaded model) goes away.
          this.#pending.get(id)?.reject(abortError(signal));
          this.#pending.delete(id);
          this.dispose();
        }
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#worker.postMessage({ ...message, id });
    });
  }

  #receive(msg) {
    const p = this.#pending.get(msg?.id);
    if (!p) return;
    switch (msg.type) {
      case "progress":
        try {
          p.onProgress?.(msg.event);
        } catch (err) {
          console.error("webgpu-llm: onProgress threw", err);
        }
        break;
      case "event":
        p.onEvent?.(msg.event);
        break;
      case "done":
        this.#pending.delete(msg.id);
        p.resolve(msg.value);
        break;
      case "error":
        this.#pending.delete(msg.id);
        p.reject(errorFromJSON(msg.error));
        break;
    }
  }

  #fail(err) {
    this.#dead ??= err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}
