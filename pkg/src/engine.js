// The public Engine: token streams and OpenAI-shaped chat on top of a core, which is either a
// LocalCore (wasm on this thread) or a WorkerCore (wasm in a Web Worker). Both have the same methods,
// so everything here is shared and the two engines behave the same.

import { LocalCore } from "./core.js";
import { GenerationStream } from "./stream.js";
import { createChatCompletion } from "./openai.js";
import { createEmbedding } from "./embeddings.js";
import { BadRequestError, abortError, throwIfAborted, toLlmError } from "./errors.js";

/**
 * Load a model and return an Engine running on this thread.
 * @param {import("../index.js").EngineOptions} options
 */
export async function createEngine(options) {
  const opts = checkOptions(options);
  const core = await LocalCore.create(opts, { onProgress: opts.onProgress, signal: opts.signal });
  return new Engine(core, core.info);
}

/** Validate the createEngine options shared by both engines. */
export function checkOptions(options) {
  if (!options || typeof options !== "object") {
    throw new BadRequestError("createEngine needs an options object: createEngine({ model: url })");
  }
  if (options.model === undefined || options.model === null) {
    throw new BadRequestError("createEngine: `model` is required (a manifest.json or .gguf URL, URLs of a split GGUF, or a File)");
  }
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") {
    throw new BadRequestError("createEngine: onProgress must be a function");
  }
  if (options.kv !== undefined && options.kv !== "f16" && options.kv !== "f32") {
    throw new BadRequestError(`createEngine: kv must be "f16" or "f32", not ${JSON.stringify(options.kv)}`);
  }
  if (options.context !== undefined && !(Number.isInteger(options.context) && options.context > 0)) {
    throw new BadRequestError(`createEngine: context must be a positive integer (tokens), not ${options.context}`);
  }
  return options;
}

export class Engine {
  #core;
  // Generations started and not yet settled (their settle promises), to await on unload. Whether
  // one may start (BUSY) and aborting are the wasm engine's: it owns the generation state.
  #inflight = new Set();
  #unloaded = false;
  // Embedding requests run one after another (the wasm engine takes one at a time): the last one's settle.
  #embedQueue = Promise.resolve();

  /** @internal use createEngine / createWorkerEngine */
  constructor(core, info) {
    this.#core = core;
    /** What was loaded: `{architecture, layers, hidden, vocab, context, hasChatTemplate, eosTokenIds, weightBytes}`. */
    this.modelInfo = info.modelInfo;
    /** The GPU in use: `{adapter, backend, maxBindingBytes, shaderF16, subgroups, timestampQuery, description}`. */
    this.gpuInfo = info.gpuInfo;
    /** A short name for the model (from its URL or file name); `model` in OpenAI responses. */
    this.modelId = info.modelId;
    /** `"package"` or `"gguf"`. */
    this.modelFormat = info.kind;
    const create = (request, requestOptions) => createChatCompletion(this, request, requestOptions);
    /** OpenAI-shaped chat: `engine.chat.completions.create({messages, stream, ...})`. */
    this.chat = Object.freeze({ completions: Object.freeze({ create }) });
    /** OpenAI-shaped embeddings (embedding models): `engine.embeddings.create({input, dimensions, encoding_format})`. */
    this.embeddings = Object.freeze({ create: (request, requestOptions) => createEmbedding(this, request, requestOptions) });
  }

  /** True while a generation runs (a new one would be rejected with BUSY). */
  get busy() {
    return this.#inflight.size > 0;
  }

  /**
   * Generate after `prompt` (text, encoded with the tokenizer's special tokens such as BOS; or token
   * ids). Returns a GenerationStream at once: iterate it for `{text, tokenId}` chunks, await
   * `.result` for the summary. BUSY (another generation runs) and other errors surface from the
   * iteration and from `.result`; generate() itself never throws.
   */
  generate(prompt, options = {}) {
    const input = typeof prompt === "string" ? { prompt } : { tokens: Array.from(prompt ?? []) };
    try {
      if (typeof prompt !== "string" && !(Array.isArray(prompt) || ArrayBuffer.isView(prompt))) {
        throw new BadRequestError("generate(prompt): prompt must be a string or an array of token ids");
      }
      return this._start(input, options ?? {});
    } catch (err) {
      const stream = new GenerationStream(() => {});
      stream._fail(toLlmError(err));
      return stream;
    }
  }

  /**
   * @internal Start a generation (BUSY, when one runs, fails the stream). `options` are the
   * sampling options plus `signal`.
   */
  _start(input, options) {
    if (this.#unloaded) throw new BadRequestError("the engine was unloaded; create a new engine to generate");
    const { signal, ...sampling } = options;
    const stream = new GenerationStream(() => this.#core.abort());
    // The engine is idle again before the stream settles, so code awaiting the stream can start
    // the next generation at once.
    const idle = () => this.#inflight.delete(settle);
    const settle = this.#core.generate(input, sampling, (e) => stream._event(e), signal).then(
      (summary) => {
        idle();
        stream._finish(toResult(summary));
      },
      (err) => {
        idle();
        stream._fail(toLlmError(err));
      },
    );
    this.#inflight.add(settle);
    return stream;
  }

  /**
   * @internal Embed `inputs` after the requests before it (concurrent calls queue, as a server
   * would serve them). `signal` rejects with ABORTED; a GPU pass already started finishes first.
   */
  _embed(inputs, options, signal) {
    this.#checkLoaded();
    throwIfAborted(signal);
    const run = () => {
      throwIfAborted(signal);
      this.#checkLoaded();
      return this.#core.embed(inputs, options);
    };
    const done = this.#embedQueue.then(run, run);
    this.#embedQueue = done.catch(() => {});
    if (!signal) return done;
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(abortError(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      done.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  }

  /**
   * Stop the running generation after its current token. Its stream ends normally and its result
   * has finishReason "abort". No effect when nothing runs.
   */
  abort() {
    if (this.#inflight.size) this.#core.abort();
  }

  /** Forget the conversation's KV cache (aborting a running generation first). */
  async resetChat() {
    await this.#stopRunning();
    if (!this.#unloaded) await this.#core.resetChat();
  }

  /** Free the model and the GPU device (aborting a running generation first). The engine is unusable afterwards. */
  async unload() {
    if (this.#unloaded) return;
    await this.#stopRunning();
    this.#unloaded = true;
    await this.#embedQueue;
    await this.#core.unload();
  }

  /** Token ids of `text`. */
  async encode(text, { addSpecialTokens = true } = {}) {
    this.#checkLoaded();
    return await this.#core.encode(String(text), addSpecialTokens);
  }

  /** Text of token ids. */
  async decode(ids) {
    this.#checkLoaded();
    return await this.#core.decode(Array.from(ids));
  }

  /**
   * The prompt text the chat template makes of `messages` (with the assistant prefix appended);
   * `{tools, tool_choice, chat_template_kwargs}` as chat.completions.create renders them.
   */
  async applyChatTemplate(messages, { tools, tool_choice, chat_template_kwargs } = {}) {
    this.#checkLoaded();
    return await this.#core.applyChatTemplate(messages, tools, tool_choice, chat_template_kwargs);
  }

  /** Bytes of the wasm linear memory where this engine runs (this page, or its worker); the peak so far. */
  async wasmMemoryBytes() {
    this.#checkLoaded();
    return await this.#core.wasmMemoryBytes();
  }

  #checkLoaded() {
    if (this.#unloaded) throw new BadRequestError("the engine was unloaded; create a new engine");
  }

  async #stopRunning() {
    if (!this.#inflight.size) return;
    this.#core.abort();
    await Promise.allSettled([...this.#inflight]);
  }
}

/** The wasm summary + timings → GenerationResult. */
function toResult(s) {
  return {
    text: s.text,
    tokenIds: Array.from(s.ids ?? []),
    promptTokens: s.promptTokens,
    reusedTokens: s.reusedTokens,
    completionTokens: s.completionTokens,
    finishReason: s.finishReason,
    timings: s.timings,
    stats: s.stats,
    guide: s.guide,
    // With tools: the text outside calls, and the calls in OpenAI's shape.
    content: s.content,
    toolCalls: s.toolCalls,
  };
}
