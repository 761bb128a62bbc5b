// OpenAI-shaped embeddings over Engine: `engine.embeddings.create({input, dimensions, encoding_format})`
// resolves with OpenAI's CreateEmbeddingResponse ({object: "list", data: [{object: "embedding",
// index, embedding}], model, usage}). Extensions: `truncate: "end"` (inputs longer than the model
// takes are cut instead of rejected with INPUT_TOO_LONG), `pooling` and `normalize` (override the
// model's sentence-transformers settings), and `timings`. All inputs of a request go to the GPU
// together, in as few padded passes as the model's batch allows (the wasm engine decides).

import { BadRequestError } from "./errors.js";

const ACCEPTED = new Set([
  "input",
  "model", // informational: the engine serves the model it loaded
  "dimensions",
  "encoding_format",
  "user",
  "truncate",
  "pooling",
  "normalize",
  "signal",
]);
const POOLING = ["cls", "mean", "last"];

/** `engine.embeddings.create(request, {signal})`. */
export async function createEmbedding(engine, request, requestOptions = {}) {
  const { inputs, options, format } = parseEmbeddingRequest(request);
  const signal = requestOptions?.signal ?? request.signal;
  const t0 = performance.now();
  const r = await engine._embed(inputs, options, signal);
  const data = [];
  for (let i = 0; i < inputs.length; i++) {
    const v = r.embeddings.subarray(i * r.dims, (i + 1) * r.dims);
    data.push({ object: "embedding", index: i, embedding: format === "base64" ? float32Base64(v) : Array.from(v) });
  }
  const totalMs = performance.now() - t0;
  return {
    object: "list",
    data,
    model: engine.modelId,
    usage: { prompt_tokens: r.promptTokens, total_tokens: r.promptTokens },
    timings: { total_ms: totalMs, tokens_per_second: totalMs > 0 ? (r.promptTokens * 1000) / totalMs : 0, gpu_passes: r.passes },
  };
}

/** Validate a request; returns the inputs (strings), the wasm's options and the encoding. */
export function parseEmbeddingRequest(request) {
  if (!request || typeof request !== "object") {
    throw new BadRequestError('embeddings.create needs a request object: { input: "text" | ["text", ...] }', { option: "input" });
  }
  const unknown = Object.keys(request).filter((k) => !ACCEPTED.has(k) && request[k] !== undefined);
  if (unknown.length) {
    throw new BadRequestError(`embeddings.create: unsupported field(s) ${unknown.join(", ")}`, { option: unknown[0] });
  }
  const { input } = request;
  let inputs;
  if (typeof input === "string") inputs = [input];
  else if (Array.isArray(input)) inputs = input;
  else throw new BadRequestError("embeddings.create: input must be a string or an array of strings", { option: "input" });
  if (inputs.length === 0) throw new BadRequestError("embeddings.create: input is an empty list", { option: "input" });
  inputs.forEach((s, i) => {
    if (typeof s !== "string") {
      const what = typeof s === "number" || Array.isArray(s) ? "token ids are not supported as input; pass the text" : `a ${typeof s}`;
      throw new BadRequestError(`embeddings.create: input[${i}] is not a string (${what})`, { option: "input", index: i });
    }
  });
  const options = {};
  const { dimensions, truncate, pooling, normalize } = request;
  if (dimensions !== undefined && dimensions !== null) {
    if (!Number.isInteger(dimensions) || dimensions < 1) {
      throw new BadRequestError(`embeddings.create: dimensions must be a positive integer, not ${dimensions}`, { option: "dimensions" });
    }
    options.dimensions = dimensions;
  }
  if (truncate !== undefined && truncate !== null) {
    if (truncate !== "end" && truncate !== "none") {
      throw new BadRequestError(`embeddings.create: truncate must be "end" or "none", not ${JSON.stringify(truncate)}`, { option: "truncate" });
    }
    options.truncate = truncate === "end";
  }
  if (pooling !== undefined && pooling !== null) {
    if (!POOLING.includes(pooling)) {
      throw new BadRequestError(`embeddings.create: pooling must be one of ${POOLING.join(", ")}, not ${JSON.stringify(pooling)}`, { option: "pooling" });
    }
    options.pooling = pooling;
  }
  if (normalize !== undefined && normalize !== null) {
    if (typeof normalize !== "boolean") throw new BadRequestError("embeddings.create: normalize must be a boolean", { option: "normalize" });
    options.normalize = normalize;
  }
  const format = request.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    throw new BadRequestError(`embeddings.create: encoding_format must be "float" or "base64", not ${JSON.stringify(format)}`, { option: "encoding_format" });
  }
  return { inputs, options, format };
}

/** OpenAI's base64 encoding: the float32 values' little-endian bytes. */
function float32Base64(v) {
  const bytes = new Uint8Array(v.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < v.length; i++) view.setFloat32(i * 4, v[i], true);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
