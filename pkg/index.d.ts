// Type declarations for webgpu-llm (hand-written; the package is plain ES modules).

// ---------------------------------------------------------------------------------------------
// Creating an engine

/** Where the model comes from. */
export type ModelSource =
  /** URL of our package's `manifest.json` (shards and tokenizer files beside it; a URL ending in `/` means its `manifest.json`), or of a `.gguf`. */
  | string
  | URL
  /** The parts of a split GGUF, in order (`…-00001-of-00003.gguf`, …). */
  | (string | URL)[]
  /** A GGUF the user picked (`<input type="file">`, drag and drop). Not cached (it is local already). */
  | Blob
  /** The parts of a split GGUF as files, in order. */
  | Blob[];

/** Where downloaded model files are kept for offline use. */
export type CacheOption =
  /** The Cache API (`caches.open("webgpu-llm-v1")`). The default (`true`/`undefined`). */
  | "cache-api"
  /** The Origin Private File System (`navigator.storage.getDirectory()`, directory `webgpu-llm-v1`). */
  | "opfs"
  /** `true`: the default store. `false`: no caching (every load downloads). */
  | boolean;

export interface EngineOptions {
  /** The model (required). */
  model: ModelSource;
  /** Load progress, at most ~10 events per second plus one per phase or shard change. */
  onProgress?: (event: ProgressEvent) => void;
  /** Offline cache; default `"cache-api"` (silently none where the Cache API is missing). A cache that
   * cannot be written (quota, storage error) never fails the load: it is given up for that load and
   * reported as `modelInfo.cacheWarning`. */
  cache?: CacheOption;
  /** KV-cache length in tokens (the longest prompt + generation); default min(model's maximum, 4096). */
  context?: number;
  /** KV-cache precision; default `"f16"` (half the memory of `"f32"`). */
  kv?: "f16" | "f32";
  /** Most prompt tokens processed per GPU pass during prefill (activation memory vs speed); default 128 (the engine's `OpenOptions`). */
  maxBatch?: number;
  /** Aborts the load (rejects with ABORTED). There is no fetch timeout: a stalled server is waited for
   * (progress events keep coming, with `bytesPerSecond` 0); abort with this signal to give up. */
  signal?: AbortSignal;
  /** Where `webgpu_llm_bg.wasm` is served, if not beside the package's `wasm/webgpu_llm.js`. */
  wasmUrl?: string | URL;
  /** Override format detection for a URL without a `.json` / `.gguf` extension (otherwise sniffed from the first bytes). */
  format?: "package" | "gguf";
  /** Expected lowercase-hex SHA-256 of a GGUF (one per part for a split GGUF). Package shards are always checked against their manifest. */
  sha256?: string | string[];
  /** Name reported as `engine.modelId` and as `model` in OpenAI responses; default derived from the URL / file name. */
  modelId?: string;
}

export interface WorkerEngineOptions extends EngineOptions {
  /**
   * A module worker running `webgpu-llm/worker` (for bundlers:
   * `new Worker(new URL("webgpu-llm/worker", import.meta.url), { type: "module" })`).
   * Default: one created from the package's `src/worker.js`, terminated by `unload()`.
   */
  worker?: Worker;
}

/** Load a model and return an engine running on this thread. */
export function createEngine(options: EngineOptions): Promise<Engine>;

/**
 * The same Engine, with the model running in a dedicated module Web Worker, so the page stays
 * responsive. The worker downloads and caches the model itself; only options, progress events,
 * token text and results cross the boundary. `onProgress` runs on this thread.
 */
export function createWorkerEngine(options: WorkerEngineOptions): Promise<Engine>;

/** What the GPU offers, without loading a model. Rejects WEBGPU_UNAVAILABLE where there is none. */
export function gpuInfo(options?: { wasmUrl?: string | URL }): Promise<GpuInfo>;

/** Bytes of this page's (or worker's) wasm linear memory: the peak so far (it never shrinks); 0 before the wasm is instantiated here. */
export function wasmMemoryBytes(): number;

// ---------------------------------------------------------------------------------------------
// Progress

export type ProgressPhase =
  /** Fetching `manifest.json`, or learning the GGUF's size. */
  | "manifest"
  /** Bytes coming from the network (and being cached). */
  | "download"
  /** Bytes coming from the offline cache. */
  | "cache"
  /** Bytes coming from a File/Blob. */
  | "read"
  /** Fetching the package's tokenizer files. */
  | "tokenizer"
  /** Building the model (KV cache, tokenizer) after the last byte. */
  | "finalize"
  /** Loaded; the engine is about to be returned. */
  | "ready";

/**
 * One of at most ~10 events a second, plus one per phase or shard change. While no byte arrives (a
 * stalled server) an event still comes every second, with the same `loadedBytes` and a rate falling to 0.
 */
export interface ProgressEvent {
  phase: ProgressPhase;
  /** Model bytes written to the GPU so far (goes back when a bad shard is fetched again). */
  loadedBytes: number;
  /** All model bytes (0 until the shard list is known). */
  totalBytes: number;
  /** Over the last ~2 s; 0 outside "download"/"cache"/"read". */
  bytesPerSecond: number;
  /** Seconds left at the current rate; undefined while the rate is unknown. */
  etaSeconds: number | undefined;
  /** Index of the shard (package) or part (GGUF) being loaded. */
  shard: number;
  shardCount: number;
  /** Whether the current bytes come from the offline cache; on "ready": whether the load made no network request at all. */
  fromCache: boolean;
  /** File name being loaded, when there is one. */
  file?: string;
  /** Set (on this and every later event) once caching was given up for this load; see `ModelInfo.cacheWarning`. */
  cacheWarning?: CacheWarning;
}

/**
 * Why the offline cache was given up for a load that still succeeded (the model came from the network;
 * the next load downloads it again). What was cached before stays usable.
 */
export interface CacheWarning {
  /** `"quota"`: not enough storage (the estimate said so before the download, or a write was refused);
   * `"error"`: a write failed otherwise. */
  reason: "quota" | "error";
  /** What happened, the figures, and what to do. */
  message: string;
  store: "cache-api" | "opfs";
  /** Bytes of this model that were not cached yet. */
  neededBytes: number;
  /** `quotaBytes - usageBytes` from `navigator.storage.estimate()`, when there is an estimate. */
  availableBytes?: number;
  usageBytes?: number;
  quotaBytes?: number;
}

// ---------------------------------------------------------------------------------------------
// The engine

export interface ModelInfo {
  /** `"generate"`: a chat/completion model (generate, chat.completions); `"embed"`: an embedding model (embeddings.create). */
  task: "generate" | "embed";
  architecture: string;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  /** KV-cache length in tokens (prompt + generation must fit); for an embedding model, the most tokens an input may have. */
  context: number;
  hasChatTemplate: boolean;
  eosTokenIds: number[];
  /** GPU bytes of the weights. */
  weightBytes: number;
  /** Weight bytes read per decoded token (all but an untied embedding table). */
  weightBytesPerToken: number;
  /** GPU bytes of the KV cache (K and V, every layer, `context` positions). */
  kvCacheBytes: number;
  /** Kernel variants chosen for this GPU: one-row products as one invocation per row (`"row"`, CPU-emulated
   * GPUs) or a workgroup reduction (`"reduce"`), and whether quantized decode products run on int8
   * activations with packed integer dot products (`int8Dot`); prompts' matmuls (`gemm`) as one invocation per
   * row, or tiles in workgroup memory, f32 or (where the GPU has `shader-f16`) f16 with f32 sums. */
  kernels: { gemv: "row" | "reduce"; int8Dot: boolean; gemm: "row" | "tiled" | "tiled-f16" };
  /** Only when this load could not cache the model (it loaded from the network anyway). */
  cacheWarning?: CacheWarning;
  /** Embedding models: values per embedding (the model's width; `dimensions` keeps fewer). */
  dims?: number;
  /** Embedding models: how token states become one vector, and whether it is L2-normalised (the checkpoint's sentence-transformers settings). */
  pooling?: "cls" | "mean" | "last";
  normalize?: boolean;
  /** Embedding models: token rows one GPU pass takes (inputs × their padded length; the `maxBatch` load option). */
  batchTokens?: number;
  /** Embedding models: GPU bytes of the batch buffers. */
  stateBytes?: number;
}

/** `engine.embeddings.create`'s request (OpenAI's EmbeddingCreateParams, plus `truncate`, `pooling`, `normalize`). */
export interface EmbeddingCreateParams {
  /** One text or several (all go to the GPU together, in padded batches). Token-id inputs are not supported. */
  input: string | string[];
  /** Informational: the engine embeds with the model it loaded. */
  model?: string;
  /** Keep the first `dimensions` values (Matryoshka-trained models), re-normalised after the cut. */
  dimensions?: number;
  /** `"float"` (default): number arrays; `"base64"`: the float32 values' little-endian bytes, base64. */
  encoding_format?: "float" | "base64";
  user?: string;
  /** `"end"`: cut an input longer than the model takes (`modelInfo.context`) at the end; `"none"` (default): reject it with INPUT_TOO_LONG. */
  truncate?: "end" | "none";
  /** Override the model's pooling. */
  pooling?: "cls" | "mean" | "last";
  /** Override the model's normalisation. */
  normalize?: boolean;
  signal?: AbortSignal;
}

export interface Embedding {
  object: "embedding";
  index: number;
  embedding: number[] | string;
}

/** OpenAI's CreateEmbeddingResponse, plus `timings`. */
export interface CreateEmbeddingResponse {
  object: "list";
  data: Embedding[];
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
  timings: { total_ms: number; tokens_per_second: number; gpu_passes: number };
}

export interface GpuInfo {
  adapter: string;
  backend: string;
  maxBindingBytes: number;
  shaderF16: boolean;
  subgroups: boolean;
  timestampQuery: boolean;
  description: string;
}

export interface GenerateOptions {
  /** Most tokens to generate (default 256); at least 1 (0 is BAD_REQUEST, as in OpenAI's API). More than the
   * context leaves (or `Infinity`) generates until the context is full, with finishReason "length". */
  maxTokens?: number;
  /** 0 (the default) = greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Sampling seed (same seed + same prompt + same options = same tokens). */
  seed?: number;
  /** Token id (as a string, OpenAI's shape) → added to its logit before sampling; -100 all but bans it. */
  logitBias?: Record<string, number>;
  /** Stop strings (not included in the text). End-of-turn tokens always stop. */
  stop?: string | string[];
  /**
   * Constrained output, at most one of the three. The text always matches, and generation ends
   * where the constraint does (finishReason "stop"; "length" if `maxTokens` cuts it). A constraint
   * the engine cannot honour is BAD_REQUEST (with `option`) before anything is generated.
   * JSON is written compactly with `", "` and `": "` separators.
   */
  jsonSchema?: Record<string, unknown> | boolean;
  /** A regex in Rust's `regex` syntax, matched against the whole output (`\d` is any Unicode digit: use [0-9]). */
  regex?: string;
  /** A grammar in llguidance's Lark syntax (`start: ...`; `%json {schema}` embeds a JSON Schema). */
  grammar?: string;
  /**
   * OpenAI's tools for a prompt made with `applyChatTemplate(messages, {tools, tool_choice})` (the
   * same values): "required" or a named function constrain the reply to valid calls, "auto"
   * constrains a call once the model opens one. The calls come back in `result.toolCalls`.
   */
  tools?: ChatCompletionTool[];
  toolChoice?: ChatCompletionToolChoice;
  /** More than one call per reply (default true). */
  parallelToolCalls?: boolean;
  /** Aborting it stops the generation; the stream and `result` then reject with ABORTED. */
  signal?: AbortSignal;
}

export interface GenerationChunk {
  /** Text of this token; "" while a UTF-8 character is split across tokens. */
  text: string;
  tokenId: number;
  /** With tools: this token is part of a tool call the model opened (not content). */
  toolCall?: true;
}

/** "tool_calls": the reply is (or ends with) tool calls, parsed into `toolCalls`. */
export type FinishReason = "stop" | "length" | "abort" | "tool_calls";

export interface Timings {
  tokenizeMs: number;
  /** From the start of the generation until the prompt was processed. */
  prefillMs: number;
  /** From the end of prefill to the end of the generation. */
  decodeMs: number;
  totalMs: number;
  timeToFirstTokenMs: number | undefined;
  /** Prompt tokens processed (not reused from the KV cache) per second of prefill. */
  prefillTokensPerSecond: number;
  /** Generated tokens per second of decode. */
  decodeTokensPerSecond: number;
}

export interface GuideStats {
  /** Building the token trie for the tokenizer: only on the engine's first constrained request. */
  buildMs?: number;
  /** Compiling the schema, regex or grammar. */
  compileMs: number;
  /** Allowed-token masks computed (one per token) and their mean and largest time. */
  masks: number;
  maskMeanUs: number;
  maskMaxUs: number;
}

export interface GenerationResult {
  /** All generated text (without a stop string or end-of-turn token). */
  text: string;
  tokenIds: number[];
  promptTokens: number;
  /** Prompt tokens whose KV entries were kept from the previous generation (not prefilled again). */
  reusedTokens: number;
  completionTokens: number;
  /** "stop": end-of-turn token or stop string; "length": maxTokens or context full; "abort": engine.abort() or the loop was left early. */
  finishReason: FinishReason;
  timings: Timings;
  /** GPU work per decoded token in steady state (after the second token); absent under 3 tokens. */
  stats?: DecodeStats;
  /** With a constraint (jsonSchema, regex, grammar, tools): its CPU cost. */
  guide?: GuideStats;
  /** With `tools`: the text outside tool calls, and the calls parsed from the reply. */
  content?: string;
  toolCalls?: ChatCompletionMessageToolCall[];
}

/** Counted by the engine's GPU context: per decode step, except readback per token read. */
export interface DecodeStats {
  dispatches: number;
  submits: number;
  buffersCreated: number;
  bindGroupsCreated: number;
  pipelinesCreated: number;
  readbackBytes: number;
  writtenBytes: number;
  /** CPU microseconds to encode one step (not counting the submit). */
  encodeUs: number;
  /** The most GPU buffer memory the engine has held (weights, KV cache, activations). */
  peakGpuBytes: number;
}

/**
 * What `engine.generate()` returns: an async iterable of chunks (one per token) plus `result`.
 * The generation starts at once; chunks are buffered until read. Leaving a `for await` loop early
 * stops the generation (finishReason "abort"). Errors (BUSY, ABORTED, CONTEXT_OVERFLOW, …) reject
 * the iteration and `result`.
 */
export declare class GenerationStream implements AsyncIterableIterator<GenerationChunk> {
  private constructor();
  /** The summary, once the generation ended. */
  readonly result: Promise<GenerationResult>;
  /** Set once the prompt was processed. */
  readonly prefill: { promptTokens: number; reusedTokens: number } | undefined;
  [Symbol.asyncIterator](): GenerationStream;
  next(): Promise<IteratorResult<GenerationChunk, undefined>>;
  return(): Promise<IteratorResult<GenerationChunk, undefined>>;
  /** `(await result).text`. */
  text(): Promise<string>;
}

export declare class Engine {
  private constructor();
  readonly modelInfo: ModelInfo;
  readonly gpuInfo: GpuInfo;
  /** A short name for the model; `model` in OpenAI responses. */
  readonly modelId: string;
  readonly modelFormat: "package" | "gguf";
  /** True while a generation runs. */
  readonly busy: boolean;

  /**
   * Generate after `prompt`: text (the tokenizer adds its special tokens, e.g. BOS, as the CLI does)
   * or token ids. Never throws: a second call while one runs yields a stream that rejects with BUSY
   * (calls are not queued).
   */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): GenerationStream;

  readonly chat: {
    readonly completions: {
      /** OpenAI-shaped chat. Rejects BUSY at once while a generation runs. */
      create(request: ChatCompletionRequestStreaming, options?: RequestOptions): Promise<AsyncIterableIterator<ChatCompletionChunk>>;
      create(request: ChatCompletionRequestNonStreaming, options?: RequestOptions): Promise<ChatCompletion>;
      create(request: ChatCompletionRequest, options?: RequestOptions): Promise<AsyncIterableIterator<ChatCompletionChunk> | ChatCompletion>;
    };
  };

  readonly embeddings: {
    /**
     * OpenAI-shaped embeddings, for an embedding model (`modelInfo.task === "embed"`; a generating model
     * rejects with BAD_REQUEST). Concurrent calls queue. Errors: BAD_REQUEST (empty list or string, bad
     * option: `option` names it), INPUT_TOO_LONG (an input over `modelInfo.context` tokens without
     * `truncate: "end"`), ABORTED (`signal`).
     */
    create(request: EmbeddingCreateParams, options?: RequestOptions): Promise<CreateEmbeddingResponse>;
  };

  /** Stop the running generation after its current token; it ends normally with finishReason "abort". No-op when idle. */
  abort(): void;
  /** Forget the conversation (KV cache); aborts a running generation first and waits for it. */
  resetChat(): Promise<void>;
  /** Free the model, the GPU device (and the worker); aborts a running generation first. The engine cannot be used afterwards. */
  unload(): Promise<void>;
  /** Token ids of `text`. */
  encode(text: string, options?: { addSpecialTokens?: boolean }): Promise<number[]>;
  /** Text of token ids. */
  decode(ids: ArrayLike<number>): Promise<string>;
  /** The prompt text the model's chat template makes of `messages` (assistant turn opened). */
  applyChatTemplate(
    messages: ChatCompletionMessageParam[],
    options?: {
      tools?: ChatCompletionTool[];
      tool_choice?: ChatCompletionToolChoice;
      chat_template_kwargs?: Record<string, unknown>;
    },
  ): Promise<string>;
  /** Bytes of the wasm linear memory where this engine runs (the page, or its worker): the peak so far. */
  wasmMemoryBytes(): Promise<number>;
}

// ---------------------------------------------------------------------------------------------
// OpenAI-shaped chat (types after openai-node; deviations noted)

export interface ChatCompletionContentPartText {
  type: "text";
  text: string;
}

export interface ChatCompletionMessageParam {
  role: "system" | "developer" | "user" | "assistant" | "tool" | (string & {});
  /** Only text (a string or text parts) is supported; null for an assistant turn with tool calls. */
  content: string | ChatCompletionContentPartText[] | null;
  name?: string;
  /** An assistant turn's calls, rendered back through the template. */
  tool_calls?: ChatCompletionMessageToolCall[];
  /** A "tool" turn: the call it answers. */
  tool_call_id?: string;
}

export interface ChatCompletionTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

export type ChatCompletionToolChoice = "none" | "auto" | "required" | { type: "function"; function: { name: string } };

export interface ChatCompletionMessageToolCall {
  id: string;
  type: "function";
  /** `arguments` is JSON text that validates against the function's `parameters`. */
  function: { name: string; arguments: string };
}

export interface ChatCompletionRequestBase {
  messages: ChatCompletionMessageParam[];
  /** Informational: the engine answers with the model it loaded. */
  model?: string;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  /** Default 0 (greedy) — unlike OpenAI's 1. */
  temperature?: number | null;
  top_p?: number | null;
  /** Extension. */
  top_k?: number | null;
  /** Extension. */
  min_p?: number | null;
  /** Extension (Hugging Face-style, 1 = off). */
  repetition_penalty?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  /** Token id → bias, applied on the GPU before sampling. */
  logit_bias?: Record<string, number> | null;
  stop?: string | string[] | null;
  /** Only 1. */
  n?: 1 | null;
  user?: string;
  /** Only false. */
  logprobs?: false | null;
  /** JSON mode (any JSON object) or a JSON Schema the output validates against (`strict` is always on). */
  response_format?: ResponseFormat | null;
  /**
   * Functions the model may call, rendered by its own chat template (Qwen2.5/Qwen3/SmolLM3-style
   * `<tool_call>` blocks, Llama 3.1+ JSON calls; other templates: BAD_REQUEST).
   */
  tools?: ChatCompletionTool[] | null;
  /** Default "auto". "required" / a named function: the reply is valid calls; "none" hides the tools. */
  tool_choice?: ChatCompletionToolChoice | null;
  /** Default true (Llama 3 templates take one call per turn). */
  parallel_tool_calls?: boolean | null;
  /**
   * Extra chat template variables, as Hugging Face's `apply_chat_template(**kwargs)` and vLLM's
   * field: `{enable_thinking: false}` turns Qwen3 / Qwen3.5 thinking off. `messages`, `tools`,
   * `documents` and `add_generation_prompt` are the request's own (BAD_REQUEST).
   */
  chat_template_kwargs?: Record<string, unknown> | null;
  /** Accepted and ignored: usage is always on the final chunk. */
  stream_options?: { include_usage?: boolean } | null;
  /** Alternative to `options.signal`. */
  signal?: AbortSignal;
}

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | {
      type: "json_schema";
      json_schema: { name?: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null };
    };

export interface ChatCompletionRequestStreaming extends ChatCompletionRequestBase {
  stream: true;
}

export interface ChatCompletionRequestNonStreaming extends ChatCompletionRequestBase {
  stream?: false | null;
}

export type ChatCompletionRequest = ChatCompletionRequestStreaming | ChatCompletionRequestNonStreaming;

export interface RequestOptions {
  /** Aborting rejects with ABORTED (the stream's iteration, or the promise). */
  signal?: AbortSignal;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** `cached_tokens`: prompt tokens reused from the KV cache of the previous turn. */
  prompt_tokens_details: { cached_tokens: number };
}

/** Extension: timing figures measured in JavaScript. */
export interface CompletionTimings {
  prefill_ms: number;
  decode_ms: number;
  total_ms: number;
  time_to_first_token_ms: number | undefined;
  prefill_tokens_per_second: number;
  decode_tokens_per_second: number;
}

/** "abort" is an extension: engine.abort() or the stream's loop was left early. */
export type ChatFinishReason = "stop" | "length" | "abort" | "tool_calls";

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  /** Unix seconds. */
  created: number;
  model: string;
  choices: [
    {
      index: 0;
      /** With tool calls, `content` is the text before them (null if none). */
      message: { role: "assistant"; content: string | null; tool_calls?: ChatCompletionMessageToolCall[] };
      finish_reason: ChatFinishReason;
      logprobs: null;
    },
  ];
  usage: CompletionUsage;
  timings: CompletionTimings;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  /** The first chunk's delta is `{role: "assistant", content: ""}`; the last chunk's delta is `{}` with `finish_reason` set. */
  choices: [
    {
      index: 0;
      /** Tool calls come whole, each in one delta (`index`, `id`, `type`, `function`), before the last chunk. */
      delta: {
        role?: "assistant";
        content?: string;
        tool_calls?: (ChatCompletionMessageToolCall & { index: number })[];
      };
      finish_reason: ChatFinishReason | null;
      logprobs: null;
    },
  ];
  /** On the final chunk only (always, whatever `stream_options` says). */
  usage?: CompletionUsage;
  /** On the final chunk only. */
  timings?: CompletionTimings;
}

// ---------------------------------------------------------------------------------------------
// Offline cache

/** Bytes per stored part of a cached file (32 MiB); an interrupted download resumes from the first missing part. */
export const PART_BYTES: number;
/** Name of the Cache API cache and the OPFS directory: "webgpu-llm-v1". */
export const CACHE_NAME: string;

/** True when loading `model` would make no network request. Default store: "cache-api". */
export function isModelCached(model: ModelSource, options?: { cache?: "cache-api" | "opfs" }): Promise<boolean>;
/** Remove `model`'s files (manifest, shards, tokenizer files, or GGUF parts) from the cache. */
export function deleteCachedModel(model: ModelSource, options?: { cache?: "cache-api" | "opfs" }): Promise<void>;
/** Remove everything this package cached (Cache API and OPFS). */
export function clearCache(): Promise<void>;

// ---------------------------------------------------------------------------------------------
// Errors

export type ErrorCode =
  | "WEBGPU_UNAVAILABLE"
  | "FEATURE_MISSING"
  | "LIMIT_TOO_SMALL"
  | "OUT_OF_MEMORY"
  | "BAD_MODEL"
  | "NETWORK"
  | "QUOTA"
  | "ABORTED"
  | "BUSY"
  | "CONTEXT_OVERFLOW"
  | "INPUT_TOO_LONG"
  | "DEVICE_LOST"
  | "BAD_REQUEST"
  | "INTERNAL";

export declare const ErrorCode: { readonly [K in ErrorCode]: K };

/** Every error this package throws. Extra fields depend on the code (see the subclasses). */
export declare class WebGpuLlmError extends Error {
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: ErrorCode;
  /** The URL involved (NETWORK, BAD_MODEL), when there is one. */
  url?: string;
  [detail: string]: unknown;
}

/** No `navigator.gpu` or no adapter (browser, flags, insecure context). */
export declare class WebGpuUnavailableError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "WEBGPU_UNAVAILABLE";
}
/** The GPU lacks a feature the model needs. */
export declare class FeatureMissingError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "FEATURE_MISSING";
}
/** A device limit is too small. */
export declare class LimitTooSmallError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "LIMIT_TOO_SMALL";
  limit?: string;
  needed?: number;
  available?: number;
}
/** The model does not fit the GPU's memory (reported before any download). */
export declare class OutOfMemoryError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "OUT_OF_MEMORY";
  neededBytes?: number;
  allocatedBytes?: number;
}
/** Bad manifest, GGUF or shard (size or sha256 mismatch after one re-fetch), or unsupported architecture. */
export declare class BadModelError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "BAD_MODEL";
  shard?: number;
  file?: string;
}
/** A request failed (after retries for 5xx and dropped connections): `url` and, for HTTP errors, `status`. */
export declare class NetworkError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "NETWORK";
  status?: number;
  /**
   * `"http"`: an error status (`status`); `"cors"`: the URL is on another origin whose server answered
   * without CORS headers (the message names the headers to send); `"offline"`: `navigator.onLine` is
   * false; `"failed"`: fetch failed otherwise (unreachable host, or CORS where that could not be told);
   * `"interrupted"`: the download kept breaking off; `"changed"`: the file kept changing on the server.
   */
  reason?: "http" | "cors" | "offline" | "failed" | "interrupted" | "changed";
}
/**
 * A storage write ran out of quota. Loads no longer reject with it: they give caching up and report
 * `modelInfo.cacheWarning` instead. Kept for code that checks for it.
 * @deprecated
 */
export declare class QuotaError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "QUOTA";
  neededBytes?: number;
  availableBytes?: number;
  usageBytes?: number;
  quotaBytes?: number;
}
/** An AbortSignal fired. */
export declare class AbortedError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "ABORTED";
}
/** A generation is already running on this engine (calls are not queued). */
export declare class BusyError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "BUSY";
}
/** The prompt does not fit the context. */
export declare class ContextOverflowError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "CONTEXT_OVERFLOW";
  promptTokens?: number;
  context?: number;
}
/** An input to embed has more tokens (`tokens`) than the model takes (`max`), and `truncate` was not asked for. */
export declare class InputTooLongError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "INPUT_TOO_LONG";
  /** Which input (0-based). */
  index?: number;
  tokens?: number;
  max?: number;
}
/** The GPU device was lost (driver reset, memory pressure): create a new engine. */
export declare class DeviceLostError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "DEVICE_LOST";
}
/** Invalid arguments, unsupported request fields, or the engine was unloaded. */
export declare class BadRequestError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "BAD_REQUEST";
}
/** A bug or an unexpected failure (the worker died, …). */
export declare class InternalError extends WebGpuLlmError {
  constructor(message: string, details?: Record<string, unknown>, options?: { cause?: unknown });
  readonly code: "INTERNAL";
}
