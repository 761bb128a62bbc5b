// The engine core: one WasmEngine, its model, and generation with timings. It runs wherever the wasm
// runs: on the page (createEngine) or inside the worker (worker.js). Engine (engine.js) puts the
// public API (token streams, OpenAI shapes) on top of this or of its worker proxy (worker-client.js),
// which has the same methods.

import { createWasmEngine, wasmMemoryBytes } from "./wasm.js";
import { loadModel } from "./loader.js";
import { BadRequestError, abortError, throwIfAborted, toLlmError } from "./errors.js";

export class LocalCore {
  /** @param {object} wasm WasmEngine */
  constructor(wasm) {
    this.wasm = wasm;
    this.info = undefined;
  }

  /** Create the GPU device and load `options.model`. Resolves with `{modelInfo, gpuInfo, modelId, kind}`. */
  static async create(options, { onProgress, signal } = {}) {
    throwIfAborted(signal);
    const wasm = await createWasmEngine(options.wasmUrl);
    const core = new LocalCore(wasm);
    try {
      const loaded = await loadModel(wasm, options, { onProgress, signal });
      core.info = { ...loaded, gpuInfo: wasm.gpuInfo() };
      return core;
    } catch (err) {
      try {
        wasm.free();
      } catch {
        // already gone
      }
      throw toLlmError(err);
    }
  }

  /**
   * Generate after `input` ({prompt: string} | {tokens: number[]} | {messages}). `onEvent` gets
   * `{type: "prefilled", promptTokens, reusedTokens}` then `{type: "token", id, text}` per token.
   * Resolves with the wasm summary plus `timings`. Rejects BUSY while another generation runs,
   * ABORTED when `signal` fires (engine.abort() instead ends with finishReason "abort"). The wasm
   * engine owns the generation state (BUSY, abort); this adds tokenization, timings and `signal`.
   */
  async generate(input, options = {}, onEvent = () => {}, signal) {
    if (!this.wasm) throw new BadRequestError("the engine was unloaded; create a new one");
    throwIfAborted(signal);
    const t0 = performance.now();
    const ids = this.tokenize(input);
    const sampling = {};
    // Every option goes to the wasm, which owns their names (unknown ones are BAD_REQUEST there).
    for (const [k, v] of Object.entries(options)) if (v !== undefined && v !== null) sampling[k] = v;
    if (typeof sampling.stop === "string") sampling.stop = [sampling.stop];
    let tPrefilled;
    let tFirst;
    const tStart = performance.now();
    // Started synchronously: BUSY is decided now, and an abort from here on is this generation's.
    let running;
    try {
      running = this.wasm.generate(ids, sampling, (e) => {
        const now = performance.now();
        if (e.type === "prefilled") tPrefilled = now;
        else if (e.type === "token" && tFirst === undefined) tFirst = now;
        try {
          onEvent(e);
        } catch (err) {
          console.error("webgpu-llm: a token callback threw", err);
        }
        return true;
      });
    } catch (err) {
      throw toLlmError(err);
    }
    const wasm = this.wasm;
    const onAbort = () => wasm.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      let summary;
      try {
        summary = await running;
      } catch (err) {
        throw toLlmError(err);
      }
      const tEnd = performance.now();
      if (signal?.aborted) throw abortError(signal);
      tPrefilled ??= tEnd;
      const prefillMs = tPrefilled - tStart;
      const decodeMs = tEnd - tPrefilled;
      const prefilled = summary.promptTokens - summary.reusedTokens;
      return {
        ...summary,
        timings: {
          tokenizeMs: tStart - t0,
          prefillMs,
          decodeMs,
          totalMs: tEnd - t0,
          timeToFirstTokenMs: tFirst !== undefined ? tFirst - t0 : undefined,
          prefillTokensPerSecond: prefillMs > 0 ? (prefilled * 1000) / prefillMs : 0,
          decodeTokensPerSecond: decodeMs > 0 ? (summary.completionTokens * 1000) / decodeMs : 0,
        },
      };
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  tokenize(input) {
    try {
      if (input.messages) return this.wasm.encodeChat(input.messages, input.tools, input.toolChoice, input.chatTemplateKwargs);
      if (input.tokens) return tokenIds(input.tokens);
      if (String(input.prompt) === "") throw new BadRequestError("the prompt is empty");
      return this.wasm.encode(String(input.prompt), true);
    } catch (err) {
      throw toLlmError(err);
    }
  }

  /**
   * Embed `inputs` (strings) with the loaded embedding model: `{dims, pooling, normalize, embeddings:
   * Float32Array (inputs × dims), tokens: Uint32Array (per input), promptTokens, passes}`. `options`:
   * `{dimensions, truncate, pooling, normalize}`. One at a time (Engine queues them).
   */
  async embed(inputs, options = {}) {
    if (!this.wasm) throw new BadRequestError("the engine was unloaded; create a new one");
    try {
      return await this.wasm.embed(inputs, options);
    } catch (err) {
      throw toLlmError(err);
    }
  }

  /** Token ids of `text` (`addSpecialTokens` lets the tokenizer add BOS etc.). */
  encode(text, addSpecialTokens = true) {
    try {
      return Array.from(this.wasm.encode(text, addSpecialTokens));
    } catch (err) {
      throw toLlmError(err);
    }
  }

  decode(ids) {
    try {
      return this.wasm.decode(Uint32Array.from(ids));
    } catch (err) {
      throw toLlmError(err);
    }
  }

  applyChatTemplate(messages, tools, toolChoice, kwargs) {
    try {
      return this.wasm.applyChatTemplate(messages, tools, toolChoice, kwargs);
    } catch (err) {
      throw toLlmError(err);
    }
  }

  /** Bytes of the wasm linear memory of the realm this core runs in. */
  wasmMemoryBytes() {
    return wasmMemoryBytes();
  }

  /** Stop the running generation after its current step (it ends with finishReason "abort"). */
  abort() {
    this.wasm?.abort();
  }

  /** Forget the KV cache (the next generation prefills its whole prompt). */
  resetChat() {
    this.wasm?.resetChat();
  }

  /** Drop the model and the GPU device. */
  unload() {
    const wasm = this.wasm;
    this.wasm = null;
    if (!wasm) return;
    try {
      wasm.unload();
    } finally {
      wasm.free();
    }
  }
}

/** Token ids as the wasm takes them; JS numbers that are not u32 (negative, fractional, NaN) would be
 * wrapped or truncated silently, so they are refused here (the vocabulary range is the engine's check). */
function tokenIds(tokens) {
  const ids = new Uint32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) {
      throw new BadRequestError(`prompt token ${i} is ${t}: token ids are whole numbers from 0`, { index: i });
    }
    ids[i] = t;
  }
  return ids;
}
