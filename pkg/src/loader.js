// Loading a model into a WasmEngine: bytes flow fetch (or cache, or File) → ReadableStream chunks →
// `wasm.write(shard, chunk)`, which copies them into GPU buffers. No shard is ever held whole in JS
// or wasm memory; the cache stores parts as they pass (cache.js).
//
// Package:  manifest.json → beginPackage → per shard: stream, finishShard (sha256, in wasm) →
//           tokenizer files (text) → finishLoad.
// GGUF:     sizes (cache record, first response's Content-Length, or HEAD) → beginGguf → per part:
//           stream, finishShard (size; sha256 in wasm when the caller gave one) → finishLoad.
// A shard whose bytes fail a check is dropped from the cache and fetched again once from the
// network; a second failure is reported (BAD_MODEL). A download that breaks off resumes with an
// HTTP Range request, within a load (up to MAX_RETRIES times) and across loads (from the first
// missing cached part); a file that changed meanwhile (other ETag/Last-Modified, or If-Range
// answered with the whole file) is fetched again from byte 0, never spliced.
// Faults (docs/reliability.md, "Network and cache faults"): 5xx and dropped connections are retried
// with backoff; there is no fetch timeout (a stalled server is waited for; progress events keep
// coming; the caller's signal aborts); a cache that cannot be written (quota, storage errors) is
// given up for the load, not the load (`cacheWarning`); a cross-origin URL whose server sends no
// CORS headers is reported as such (a no-cors probe shows the server did answer).

import { ProgressTracker } from "./progress.js";
import { PART_BYTES, PartSink, cacheable, metaKey, openStore, partKey, partLength } from "./cache.js";
import {
  BadModelError,
  BadRequestError,
  NetworkError,
  WebGpuLlmError,
  abortError,
  throwIfAborted,
  toLlmError,
} from "./errors.js";

/** Network failures in a row (without a byte of progress) before a download is given up. */
const MAX_RETRIES = 3;
/** Times a file may change on the server during one load before the load gives up. */
const MAX_CHANGES = 2;
/** How long the no-cors probe after a failed cross-origin fetch may take. */
const PROBE_MS = 5000;
/** Largest piece handed to one `wasm.write` (its copy lives in wasm memory meanwhile). */
const MAX_WRITE_BYTES = 4 << 20;
const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"
const TOKENIZER_JSON = "tokenizer.json";
const TOKENIZER_CONFIG_JSON = "tokenizer_config.json";
// An embedding package's pooling and normalisation (written by `convert` from sentence-transformers' files).
const EMBEDDING_JSON = "embedding.json";

/**
 * Check a `model` option and make its URLs absolute (against `base`, the page's URL), so it can be
 * posted to a worker. Returns a URL string, an array of URL strings, a Blob, or an array of Blobs.
 */
export function normalizeModel(model, base = globalThis.location?.href) {
  const one = (m) => {
    if (typeof Blob !== "undefined" && m instanceof Blob) return m;
    if (typeof m === "string" || m instanceof URL) {
      try {
        return new URL(m, base).href;
      } catch {
        throw new BadRequestError(`model: ${JSON.stringify(String(m))} is not a valid URL`);
      }
    }
    throw new BadRequestError(
      "model must be a URL (manifest.json or .gguf), an array of URLs (a split GGUF, in order), or a File/Blob (or an array of them)",
    );
  };
  if (Array.isArray(model)) {
    if (model.length === 0) throw new BadRequestError("model: the array of GGUF parts is empty");
    const parts = model.map(one);
    const blobs = parts.filter((p) => typeof p !== "string").length;
    if (blobs !== 0 && blobs !== parts.length) {
      throw new BadRequestError("model: an array must be all URLs or all Files/Blobs");
    }
    return parts.length === 1 ? parts[0] : parts;
  }
  return one(model);
}

/** A short name for the model, from its URL or file name ("SmolLM2-135M-Instruct.Q4_1"). */
export function modelIdOf(model) {
  const first = Array.isArray(model) ? model[0] : model;
  if (typeof first !== "string") return stripGguf(first?.name || "model");
  const u = new URL(first);
  const segs = u.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const last = segs.at(-1) ?? u.host;
  if (/\.json$/i.test(last) || u.pathname.endsWith("/")) {
    const dir = /\.json$/i.test(last) ? segs.at(-2) : last;
    return dir ?? u.host;
  }
  return stripGguf(last);
}

function stripGguf(name) {
  return name.replace(/(-\d{5}-of-\d{5})?\.gguf$/i, "");
}

/**
 * Load `options.model` into `wasm` (a WasmEngine). Resolves with `{modelInfo, modelId, kind}`.
 * @param {object} wasm WasmEngine
 * @param {object} options createEngine options (model already normalised or not)
 * @param {{onProgress?: Function, signal?: AbortSignal}} io
 */
export async function loadModel(wasm, options, { onProgress, signal } = {}) {
  const model = normalizeModel(options.model);
  const urls = [model].flat().filter((m) => typeof m === "string");
  const store = urls.some(cacheable) ? await openStore(options.cache).catch((e) => Promise.reject(toLlmError(e))) : null;
  const ctx = {
    wasm,
    store, // reads (and, while cacheWrites, writes)
    cacheWrites: !!store, // false once caching was given up for this load
    cacheWarning: undefined, // why it was given up (modelInfo.cacheWarning, progress events)
    signal,
    progress: new ProgressTracker(onProgress),
    loadOptions: wasmLoadOptions(options),
    sha256: options.sha256,
    bytesToCache: 0,
    usedNetwork: false, // any request made: "ready" reports fromCache = !usedNetwork
  };
  try {
    throwIfAborted(signal);
    let modelInfo;
    let kind;
    if (Array.isArray(model)) {
      kind = "gguf";
      modelInfo = await loadGguf(ctx, model.map((m) => partSource(m)));
    } else if (typeof model !== "string") {
      kind = "gguf";
      modelInfo = await loadGguf(ctx, [partSource(model)]);
    } else {
      const detected = await detect(ctx, model, options.format);
      kind = detected.kind;
      modelInfo =
        kind === "package"
          ? await loadPackage(ctx, detected.url, detected.text)
          : await loadGguf(ctx, [{ url: detected.url, name: fileName(detected.url), response: detected.response }]);
    }
    if (ctx.cacheWarning) modelInfo = { ...modelInfo, cacheWarning: ctx.cacheWarning };
    ctx.progress.setPhase("ready", { fromCache: !ctx.usedNetwork });
    return { modelInfo, modelId: options.modelId ?? modelIdOf(model), kind };
  } catch (err) {
    try {
      wasm.cancelLoad();
    } catch {
      // nothing was loading
    }
    throw finalError(ctx, err);
  } finally {
    ctx.progress.stop();
  }
}

function wasmLoadOptions(options) {
  const out = {};
  for (const k of ["context", "kv", "maxBatch", "sha256"]) if (options[k] !== undefined) out[k] = options[k];
  return out;
}

function partSource(m) {
  return typeof m === "string" ? { url: m, name: fileName(m) } : { blob: m, name: m.name || "blob" };
}

function fileName(url) {
  const u = new URL(url);
  return decodeURIComponent(u.pathname.split("/").filter(Boolean).at(-1) ?? u.host);
}

/** Map whatever ended the load onto a WebGpuLlmError (ABORTED wins while the signal is aborted). */
function finalError(ctx, err) {
  if (ctx.signal?.aborted) return abortError(ctx.signal);
  return toLlmError(err);
}

// ---------------------------------------------------------------------------------------------
// What the URL is

/** Package or GGUF: by `format`, by extension, by what the cache holds, else by the first bytes. */
async function detect(ctx, url, format) {
  if (format !== undefined && format !== "package" && format !== "gguf") {
    throw new BadRequestError(`format must be "package" or "gguf", not ${JSON.stringify(format)}`);
  }
  const path = new URL(url).pathname;
  if (path.endsWith("/")) return { kind: "package", url: new URL("manifest.json", url).href };
  if (format) return { kind: format, url };
  if (/\.gguf$/i.test(path)) return { kind: "gguf", url };
  if (/\.json$/i.test(path)) return { kind: "package", url };
  if (ctx.store && cacheable(url)) {
    if (await ctx.store.getJSON(metaKey(url))) return { kind: "gguf", url };
    const text = await ctx.store.getText(url);
    if (text !== undefined) return { kind: "package", url, text: { text, fromCache: true } };
  }
  // Unknown: look at the first bytes of the response, then keep using it (no second request).
  ctx.progress.setPhase("manifest", { file: fileName(url) });
  const resp = await fetchChecked(ctx, url);
  const reader = resp.body.getReader();
  const head = [];
  let headBytes = 0;
  while (headBytes < 4) {
    const r = await readChunk(ctx, reader);
    if (r.done) break;
    head.push(r.value);
    headBytes += r.value.length;
  }
  const first = concat(head).subarray(0, 4);
  const isGguf = first.length === 4 && GGUF_MAGIC.every((b, i) => first[i] === b);
  const rest = prepend(head, reader);
  if (isGguf) {
    return { kind: "gguf", url, response: { status: resp.status, ok: resp.ok, headers: resp.headers, body: rest } };
  }
  const text = await new Response(rest).text();
  return { kind: "package", url, text: { text, fromCache: false } };
}

function concat(chunks) {
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** A stream of `chunks` followed by the rest of `reader`. */
function prepend(chunks, reader) {
  const queue = [...chunks];
  return new ReadableStream({
    async pull(controller) {
      if (queue.length) return controller.enqueue(queue.shift());
      const r = await reader.read();
      if (r.done) controller.close();
      else controller.enqueue(r.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Package: manifest + shards + tokenizer files

async function loadPackage(ctx, manifestUrl, knownText) {
  const { wasm, progress } = ctx;
  progress.setPhase("manifest", { file: "manifest.json" });
  const manifest = knownText ?? (await getText(ctx, manifestUrl, "manifest"));
  let plan;
  try {
    plan = await wasm.beginPackage(manifest.text, ctx.loadOptions);
  } catch (err) {
    throw decorate(toLlmError(err), manifestUrl);
  }
  const shards = plan.shards.map((s) => ({ ...s, url: new URL(s.file, manifestUrl).href, name: s.file }));
  progress.setShards(shards);
  await planCache(ctx, shards);
  for (let i = 0; i < shards.length; i++) await loadShard(ctx, i, shards[i]);

  progress.setPhase("tokenizer", { file: TOKENIZER_JSON });
  const files = plan.tokenizerFiles ?? [TOKENIZER_JSON, TOKENIZER_CONFIG_JSON];
  const texts = {};
  for (const f of [TOKENIZER_JSON, TOKENIZER_CONFIG_JSON, EMBEDDING_JSON]) {
    if (files.includes(f)) texts[f] = await getText(ctx, new URL(f, manifestUrl).href, f);
  }
  progress.setPhase("finalize", { file: undefined });
  let info;
  try {
    info = await wasm.finishLoad(texts[TOKENIZER_JSON]?.text, texts[TOKENIZER_CONFIG_JSON]?.text, texts[EMBEDDING_JSON]?.text);
  } catch (err) {
    throw decorate(toLlmError(err), manifestUrl);
  }
  // Text files are cached only now that they proved valid, so a broken one is never pinned.
  if (cacheable(manifestUrl)) {
    if (!manifest.fromCache) await cacheWrite(ctx, (store) => store.putText(manifestUrl, manifest.text));
    for (const [f, t] of Object.entries(texts)) {
      if (!t.fromCache) await cacheWrite(ctx, (store) => store.putText(new URL(f, manifestUrl).href, t.text));
    }
  }
  return info;
}

/** A text file: from the cache, else from the network (the caller caches it once it proved valid). */
async function getText(ctx, url, what) {
  if (ctx.store && cacheable(url)) {
    const text = await ctx.store.getText(url);
    if (text !== undefined) return { text, fromCache: true };
  }
  const resp = await fetchChecked(ctx, url, undefined, what);
  try {
    return { text: await resp.text(), fromCache: false };
  } catch (err) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal);
    throw new NetworkError(`reading ${what} from ${url} failed: ${err.message}`, { url }, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// GGUF: one file or the parts of a split file

async function loadGguf(ctx, parts) {
  const { wasm, progress } = ctx;
  progress.setPhase("manifest", { file: parts[0].name });
  const sizes = [];
  for (let i = 0; i < parts.length; i++) sizes.push(await partSize(ctx, parts[i], i === 0));
  try {
    await wasm.beginGguf(sizes, ctx.loadOptions);
  } catch (err) {
    throw decorate(toLlmError(err), parts[0].url ?? parts[0].name);
  }
  const shards = parts.map((p, i) => ({ ...p, bytes: sizes[i] }));
  progress.setShards(shards);
  await planCache(ctx, shards);
  for (let i = 0; i < shards.length; i++) await loadShard(ctx, i, shards[i]);
  progress.setPhase("finalize", { file: undefined });
  try {
    return await wasm.finishLoad(undefined, undefined, undefined);
  } catch (err) {
    throw decorate(toLlmError(err), parts[0].url ?? parts[0].name);
  }
}

/**
 * Size of a GGUF part: File/Blob size; the cache record; else the GET that will deliver the bytes
 * (`keepResponse`, for the first part) or a HEAD request.
 */
async function partSize(ctx, part, keepResponse) {
  if (part.blob) return part.blob.size;
  if (ctx.store && cacheable(part.url)) {
    const meta = await ctx.store.getJSON(metaKey(part.url));
    if (meta?.bytes > 0 && meta.partBytes === PART_BYTES) return meta.bytes;
  }
  if (!part.response && keepResponse) part.response = await fetchChecked(ctx, part.url, undefined, "GGUF");
  const resp = part.response ?? (await fetchChecked(ctx, part.url, { method: "HEAD" }, "GGUF"));
  const encoding = resp.headers.get("content-encoding");
  if (encoding && encoding !== "identity") {
    throw new NetworkError(
      `${part.url} is served with Content-Encoding: ${encoding}; serve .gguf files uncompressed so their size is known and Range requests work`,
      { url: part.url },
    );
  }
  const length = Number(resp.headers.get("content-length"));
  if (!(length > 0)) {
    throw new NetworkError(
      `${part.url}: the server sent no Content-Length, so the GGUF's size is unknown; serve it as a plain static file`,
      { url: part.url, status: resp.status },
    );
  }
  return length;
}

// ---------------------------------------------------------------------------------------------
// Shards (package shards and GGUF parts alike)

/**
 * Read each shard's cache record. When `navigator.storage.estimate()` says the uncached bytes cannot
 * fit, caching is given up for this load before any byte is written (the model still loads).
 */
async function planCache(ctx, shards) {
  if (!ctx.store) return;
  let uncached = 0;
  for (const s of shards) {
    if (!s.url || !cacheable(s.url)) continue;
    s.meta = await ctx.store.getJSON(metaKey(s.url));
    if (!(s.meta?.complete && s.meta.bytes === s.bytes)) uncached += s.bytes;
  }
  ctx.bytesToCache = uncached;
  if (uncached === 0 || !ctx.cacheWrites || !globalThis.navigator?.storage?.estimate) return;
  let estimate;
  try {
    estimate = await navigator.storage.estimate();
  } catch {
    return; // no estimate: try, and give up if a write fails
  }
  const { usage = 0, quota = Infinity } = estimate;
  if (quota - usage < uncached) await giveUpCache(ctx, undefined, { usage, quota });
}

/** A cache write that may fail without failing the load: `fn(store)` unless caching was given up. */
async function cacheWrite(ctx, fn) {
  if (!ctx.cacheWrites) return;
  try {
    await fn(ctx.store);
  } catch (err) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal);
    await giveUpCache(ctx, err);
  }
}

/**
 * Stop caching for the rest of this load (what is cached stays readable): the storage is full
 * (`err` a QuotaExceededError, or none when the estimate said so up front) or failed otherwise.
 * Records `ctx.cacheWarning`, reports it on the progress events and the console.
 */
async function giveUpCache(ctx, err, estimate) {
  if (!ctx.cacheWrites) return;
  ctx.cacheWrites = false;
  const quotaFull = !err || err?.name === "QuotaExceededError";
  let usage = estimate?.usage;
  let quota = estimate?.quota;
  if (!estimate) {
    try {
      ({ usage, quota } = await navigator.storage.estimate());
    } catch {
      // no estimate: say what we know
    }
  }
  const needed = ctx.bytesToCache;
  const available = Number.isFinite(quota) && Number.isFinite(usage) ? Math.max(0, quota - usage) : undefined;
  const have = available !== undefined ? `; ${mib(available)} available (quota ${mib(quota)}, ${mib(usage)} used)` : "";
  const why = !err
    ? `caching this model needs ${mib(needed)} of storage${have}`
    : quotaFull
      ? `the browser refused to store more of this model (QuotaExceededError: ${err.message}); caching it needs ${mib(needed)}${have}`
      : `writing the offline cache failed (${err?.name ?? "Error"}: ${err?.message ?? err})`;
  ctx.cacheWarning = {
    reason: quotaFull ? "quota" : "error",
    message:
      `${why}. The model is loaded from the network without caching it, so the next load downloads it again. ` +
      (quotaFull
        ? "Free space (clearCache(), deleteCachedModel()) or ask for durable storage with navigator.storage.persist()"
        : `Try cache: "${ctx.store.kind === "opfs" ? "cache-api" : "opfs"}", or clear the cache with clearCache()`),
    store: ctx.store.kind,
    neededBytes: needed,
    availableBytes: available,
    usageBytes: usage,
    quotaBytes: Number.isFinite(quota) ? quota : undefined,
  };
  for (const k of Object.keys(ctx.cacheWarning)) if (ctx.cacheWarning[k] === undefined) delete ctx.cacheWarning[k];
  ctx.progress.setCacheWarning(ctx.cacheWarning);
  console.warn(`webgpu-llm: ${ctx.cacheWarning.message}`);
}

function mib(bytes) {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Stream shard `i` into the engine and check it; on bad bytes, once more from the network. */
async function loadShard(ctx, i, shard) {
  const { wasm, store, progress } = ctx;
  for (let attempt = 0; ; attempt++) {
    try {
      await streamShard(ctx, i, shard, { allowCache: attempt === 0 });
      await wasm.finishShard(i); // size, and sha256 (package manifest, or the caller's for GGUF)
      // Every part is stored unless caching was given up (then cacheWrite does nothing).
      if (shard.url && cacheable(shard.url)) {
        await cacheWrite(ctx, (st) =>
          st.putJSON(metaKey(shard.url), { ...(shard.meta ?? {}), bytes: shard.bytes, partBytes: PART_BYTES, complete: true }),
        );
      }
      return;
    } catch (err) {
      const e = ctx.signal?.aborted ? abortError(ctx.signal) : toLlmError(err);
      if (e.code !== "BAD_MODEL" || !shard.url) throw decorate(e, shard.url ?? shard.name, i);
      // Bad bytes (corrupt cache, truncated or altered transfer): forget them everywhere.
      if (store && cacheable(shard.url)) await deleteEntries(store, shard.url, shard.bytes).catch(() => {});
      shard.meta = undefined;
      if (attempt >= 1) {
        throw decorate(
          new BadModelError(`${e.message} (fetched again from the network and still bad)`, { ...e, shard: i, file: shard.name }, { cause: e }),
          shard.url,
          i,
        );
      }
      await wasm.restartShard(i);
      progress.setShardBytes(i, 0);
    }
  }
}

/** Attach the URL (and shard) to an error that lacks them, without changing its class. */
function decorate(err, where, shard) {
  if (where && err.url === undefined && err instanceof WebGpuLlmError) {
    err.url = where;
    if (err.code === "BAD_MODEL" && !err.message.includes(where)) err.message = `${err.message} [${where}]`;
  }
  if (shard !== undefined && err.shard === undefined) err.shard = shard;
  return err;
}

/** Forget `url`'s record and its parts from part `from` on. */
async function deleteEntries(store, url, bytes, from = 0) {
  await store.delete(metaKey(url));
  const parts = Math.ceil(bytes / PART_BYTES);
  for (let p = from; p < parts; p++) await store.delete(partKey(url, p));
}

/** One pass over shard `i`'s bytes: File, cached parts, then the network for whatever is missing. */
async function streamShard(ctx, i, shard, { allowCache }) {
  const { store, progress } = ctx;
  if (shard.blob) {
    progress.setPhase("read", { shard: i, file: shard.name, fromCache: false });
    const end = await pump(ctx, i, shard, shard.blob.stream(), 0, null);
    if (end !== shard.bytes) throw new BadModelError(`${shard.name}: read ${end} bytes of ${shard.bytes}`);
    return;
  }
  const url = shard.url;
  const useStore = !!store && cacheable(url);
  let offset = 0;
  let meta = allowCache ? shard.meta : undefined;
  if (useStore && meta && (meta.bytes !== shard.bytes || meta.partBytes !== PART_BYTES)) {
    // another file under this URL
    await cacheWrite(ctx, (st) => deleteEntries(st, url, Math.max(meta.bytes || 0, shard.bytes)));
    meta = undefined;
  }
  if (useStore && meta) {
    // Consecutive parts of the right stored size from the start: read them from the cache.
    const parts = Math.ceil(shard.bytes / PART_BYTES);
    let k = 0;
    while (k < parts && (await store.partSize(partKey(url, k))) === partLength(shard.bytes, PART_BYTES, k)) k++;
    while (k > 0) {
      progress.setPhase("cache", { shard: i, file: shard.name, fromCache: true });
      let damaged;
      try {
        damaged = await readCachedParts(ctx, i, shard, k);
      } catch (err) {
        if (ctx.signal?.aborted || !(err instanceof ReadFailure)) throw err;
        damaged = 0; // the cache could not be read back (evicted, I/O error): fetch the shard from scratch
      }
      if (damaged < 0) {
        offset = Math.min(k * PART_BYTES, shard.bytes);
        break;
      }
      // Part `damaged` streamed more or fewer bytes than it should (cut short or altered after it
      // was stored): drop it and the parts after it, read the ones before it again, fetch the rest.
      await cacheWrite(ctx, async (st) => {
        for (let p = damaged; p < parts; p++) await st.delete(partKey(url, p));
      });
      await ctx.wasm.restartShard(i);
      progress.setShardBytes(i, 0);
      k = damaged;
    }
    if (offset === shard.bytes) return;
    if (meta.complete) {
      // Parts are missing: the record must not claim the file is cached until they are back.
      meta = { ...meta, complete: false };
      shard.meta = meta;
      await cacheWrite(ctx, (st) => st.putJSON(metaKey(url), meta));
    }
  }
  progress.setPhase("download", { shard: i, file: shard.name, fromCache: false });
  await download(ctx, i, shard, offset, useStore ? meta : undefined);
}

/**
 * Stream cached parts 0..k-1 of shard `i` into the engine. Returns -1 when each gave its length,
 * else the first part that did not (or is gone); throws ReadFailure when the cache cannot be read.
 */
async function readCachedParts(ctx, i, shard, k) {
  let offset = 0;
  for (let p = 0; p < k; p++) {
    const stream = await ctx.store.readPart(partKey(shard.url, p));
    if (!stream) return p;
    const end = await pump(ctx, i, shard, stream, offset, null);
    if (end !== offset + partLength(shard.bytes, PART_BYTES, p)) return p;
    offset = end;
  }
  return -1;
}

/** Validators of a response: what tells one version of a file from another. */
function validatorsOf(resp) {
  const etag = resp.headers.get("etag") ?? undefined;
  const lastModified = resp.headers.get("last-modified") ?? undefined;
  const m = /\/(\d+)\s*$/.exec(resp.headers.get("content-range") ?? "");
  return { etag, lastModified, total: m ? Number(m[1]) : undefined };
}

/** Whether `got` (a later response) is another version of the file than `known`. */
function differs(known, got) {
  if (!known) return false;
  return (
    (!!known.etag && !!got.etag && known.etag !== got.etag) ||
    (!!known.lastModified && !!got.lastModified && known.lastModified !== got.lastModified)
  );
}

/** The If-Range value for `known`: a strong ETag, else Last-Modified (RFC 9110 §13.1.5). */
function ifRangeOf(known) {
  if (known?.etag && !known.etag.startsWith("W/")) return known.etag;
  return known?.lastModified;
}

function isSameOrigin(url) {
  const here = globalThis.location?.origin;
  return !!here && here !== "null" && new URL(url).origin === here;
}

/** A network failure worth trying again (a CORS refusal is not). */
function retryable(err) {
  return err instanceof NetworkError && err.reason !== "cors";
}

/**
 * Fetch shard `i` from byte `offset` to its end, writing to the engine and the cache. Breaks in the
 * transfer are resumed with Range requests (same-origin ones carry If-Range). A server that answers
 * a Range request with the whole file, or with bytes of another version of it (other ETag or
 * Last-Modified than the bytes in hand: the cached parts' or this load's first response's), makes
 * the shard start again at byte 0, so a file that changed is never spliced from two versions.
 */
async function download(ctx, i, shard, offset, meta) {
  const { wasm, store, progress } = ctx;
  const url = shard.url;
  const useStore = !!store && cacheable(url);
  let sink = useStore && ctx.cacheWrites ? new PartSink(store, url, shard.bytes, offset, PART_BYTES, (err) => giveUpCache(ctx, err)) : null;
  // Validators of the bytes already in hand.
  let known = meta && offset > 0 ? { etag: meta.etag, lastModified: meta.lastModified } : undefined;
  const sameOrigin = isSameOrigin(url);
  let failures = 0;
  let changes = 0;
  try {
    for (;;) {
      let resp;
      if (shard.response && offset === 0) {
        resp = shard.response;
        shard.response = undefined;
      } else {
        shard.response?.body?.cancel().catch(() => {});
        shard.response = undefined;
        let init;
        if (offset > 0) {
          const headers = { Range: `bytes=${offset}-` };
          // If-Range is not a CORS-safelisted header: cross-origin, it would need a preflight that
          // many static hosts refuse, so there the validators of the 206 are compared instead.
          const ifRange = sameOrigin ? ifRangeOf(known) : undefined;
          if (ifRange) headers["If-Range"] = ifRange;
          init = { headers };
        }
        try {
          resp = await fetchRaw(ctx, url, init);
        } catch (err) {
          if (retryable(err) && failures < MAX_RETRIES) {
            await backoff(ctx, ++failures);
            continue;
          }
          throw err;
        }
      }
      if (resp.status === 416) {
        throw new BadModelError(`${url} is shorter than the ${shard.bytes} bytes expected (HTTP 416 for bytes=${offset}-)`, {
          shard: i,
          file: shard.name,
        });
      }
      if (!resp.ok) {
        resp.body?.cancel().catch(() => {});
        if (resp.status >= 500 && failures < MAX_RETRIES) {
          await backoff(ctx, ++failures);
          continue;
        }
        throw httpError(url, resp, "model file", failures);
      }
      const got = validatorsOf(resp);
      if (offset > 0) {
        const changed = differs(known, got) || (resp.status === 206 && got.total !== undefined && got.total !== shard.bytes);
        if (changed && ++changes > MAX_CHANGES) {
          resp.body?.cancel().catch(() => {});
          throw new NetworkError(
            `${url} changed on the server ${changes} times during this load (ETag/Last-Modified); load again once it is stable`,
            { url, reason: "changed" },
          );
        }
        if (resp.status === 206 && changed) {
          // Bytes of another version (a server that ignored If-Range, or a cross-origin resume
          // without it): all of the file again.
          resp.body?.cancel().catch(() => {});
          await restart();
          continue;
        }
        // 200: the server ignored Range, or If-Range found another version: this body is the whole file.
        if (resp.status !== 206) await restart();
      }
      if (offset === 0) {
        const length = Number(resp.headers.get("content-length"));
        if (resp.status === 200 && length > 0 && length !== shard.bytes) {
          resp.body?.cancel().catch(() => {});
          throw new BadModelError(`${url} is ${length} bytes on the server, but ${shard.bytes} were expected`, {
            shard: i,
            file: shard.name,
          });
        }
        known = got;
        if (sink) {
          meta = { bytes: shard.bytes, partBytes: PART_BYTES, etag: got.etag, lastModified: got.lastModified, complete: false };
          shard.meta = meta;
          await cacheWrite(ctx, (st) => st.putJSON(metaKey(url), meta));
        }
      }
      const before = offset;
      try {
        offset = await pump(ctx, i, shard, resp.body, offset, sink);
      } catch (err) {
        if (!(err instanceof ReadFailure)) throw err;
        offset = err.offset;
      }
      if (offset === shard.bytes) return;
      // The body ended early or the connection broke: resume from here.
      if (offset > before) failures = 0;
      if (failures >= MAX_RETRIES) {
        throw new NetworkError(
          `downloading ${url} broke off at byte ${offset} of ${shard.bytes}, ${MAX_RETRIES + 1} times; check the connection and load again (the cached part resumes)`,
          { url, reason: "interrupted" },
        );
      }
      await backoff(ctx, ++failures);
    }
  } catch (err) {
    sink?.abort();
    throw err;
  }

  /** Back to byte 0: the engine forgets the shard, and the cache its parts (they may be of another version). */
  async function restart() {
    await wasm.restartShard(i);
    offset = 0;
    known = undefined;
    progress.setShardBytes(i, 0);
    if (sink) {
      sink.restart();
      await cacheWrite(ctx, (st) => deleteEntries(st, url, shard.bytes));
    }
  }
}

async function backoff(ctx, failures) {
  const ms = 250 * 2 ** (failures - 1);
  await new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    ctx.signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(abortError(ctx.signal));
      },
      { once: true },
    );
  });
  throwIfAborted(ctx.signal);
}

/** A read from a byte stream failed (network break, cache read error); `offset` is how far it got. */
class ReadFailure extends Error {
  constructor(cause, offset) {
    super(`reading failed at byte ${offset}: ${cause?.message ?? cause}`, { cause });
    this.offset = offset;
  }
}

/**
 * Copy `stream` into shard `i` from `offset` (and into `sink`) until it ends.
 * Returns the new offset; throws ReadFailure when the stream errors.
 */
async function pump(ctx, i, shard, stream, offset, sink) {
  const { wasm, progress, signal } = ctx;
  const reader = stream.getReader();
  let done = false;
  try {
    for (;;) {
      throwIfAborted(signal);
      let r;
      try {
        r = await reader.read();
      } catch (err) {
        if (signal?.aborted) throw abortError(signal);
        throw new ReadFailure(err, offset);
      }
      if (r.done) {
        done = true;
        return offset;
      }
      const chunk = r.value;
      if (offset + chunk.length > shard.bytes) {
        throw new BadModelError(`${shard.url ?? shard.name} is longer than the ${shard.bytes} bytes expected`, {
          shard: i,
          file: shard.name,
        });
      }
      // Large chunks (a Blob stream may deliver big ones) are cut, as the wasm copies each one into
      // its linear memory before queueing it for the GPU.
      for (let o = 0; o < chunk.length; o += MAX_WRITE_BYTES) {
        await wasm.write(i, o === 0 && chunk.length <= MAX_WRITE_BYTES ? chunk : chunk.subarray(o, o + MAX_WRITE_BYTES));
      }
      if (sink) {
        if (ctx.cacheWrites) await sink.write(chunk); // a failed write gives caching up (PartSink's onError)
        else sink.abort();
      }
      offset += chunk.length;
      progress.setShardBytes(i, offset);
    }
  } finally {
    if (!done) reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}

async function readChunk(ctx, reader) {
  try {
    return await reader.read();
  } catch (err) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal);
    throw new NetworkError(`reading the model response failed: ${err.message}`, undefined, { cause: err });
  }
}

// ---------------------------------------------------------------------------------------------
// fetch

/** fetch() with the load's signal; network failures become NETWORK (aborts ABORTED). */
async function fetchRaw(ctx, url, init) {
  throwIfAborted(ctx.signal);
  ctx.usedNetwork = true;
  try {
    return await fetch(url, { ...init, signal: ctx.signal });
  } catch (err) {
    if (ctx.signal?.aborted) throw abortError(ctx.signal);
    throw await fetchFailure(ctx, url, err);
  }
}

/**
 * Why fetch() rejected (it says only "Failed to fetch"): the browser is offline; or, for a
 * cross-origin URL, a no-cors probe gets an (opaque) answer, so the server is there and the CORS
 * check refused its response; else the host is unreachable (or the probe itself was blocked, e.g.
 * by the page's Cross-Origin-Embedder-Policy: then both causes are named).
 */
async function fetchFailure(ctx, url, err) {
  const what = `could not fetch ${url} (${err?.message ?? err})`;
  if (globalThis.navigator?.onLine === false) {
    return new NetworkError(`${what}: the browser is offline. Load again once it is connected (cached parts are not downloaded again)`, { url, reason: "offline" }, { cause: err });
  }
  if (isSameOrigin(url)) {
    return new NetworkError(`${what}: the server is unreachable or the connection failed`, { url, reason: "failed" }, { cause: err });
  }
  const page = globalThis.location?.origin ?? "this page's origin";
  const needs =
    `The model's server must send Access-Control-Allow-Origin: ${page} (or *); for Range requests (resumed downloads) also ` +
    "Access-Control-Allow-Headers: Range, and Access-Control-Expose-Headers: Content-Length, Content-Range, ETag";
  if (await answersNoCors(ctx, url)) {
    return new NetworkError(
      `${what}: CORS. ${new URL(url).origin} answered, but without CORS headers, so the browser withheld the response from this page (${page}). ${needs}`,
      { url, reason: "cors" },
      { cause: err },
    );
  }
  return new NetworkError(
    `${what}: the host is unreachable, or (it is another origin) its server sent no CORS headers. ${needs}`,
    { url, reason: "failed" },
    { cause: err },
  );
}

/** Whether `url`'s server answers a no-cors HEAD request (probed once per origin and load). */
function answersNoCors(ctx, url) {
  const origin = new URL(url).origin;
  ctx.probes ??= new Map();
  if (!ctx.probes.has(origin)) ctx.probes.set(origin, probe(url, ctx.signal));
  return ctx.probes.get(origin);
}

async function probe(url, signal) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), PROBE_MS);
  const onAbort = () => ac.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const r = await fetch(url, { method: "HEAD", mode: "no-cors", credentials: "omit", cache: "no-store", signal: ac.signal });
    return r.type === "opaque" || r.ok;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** fetchRaw + retries on network failures and 5xx + NETWORK for any other non-2xx status. */
async function fetchChecked(ctx, url, init, what = "file") {
  for (let failures = 0; ; ) {
    let resp;
    try {
      resp = await fetchRaw(ctx, url, init);
    } catch (err) {
      if (retryable(err) && failures < MAX_RETRIES) {
        await backoff(ctx, ++failures);
        continue;
      }
      throw err;
    }
    if (resp.ok) return resp;
    resp.body?.cancel().catch(() => {});
    if (resp.status >= 500 && failures < MAX_RETRIES) {
      await backoff(ctx, ++failures);
      continue;
    }
    throw httpError(url, resp, what, failures);
  }
}

function httpError(url, resp, what, retries = 0) {
  const hint =
    resp.status === 404
      ? " (check the model URL and that the file is deployed)"
      : resp.status === 401 || resp.status === 403
        ? " (the server refused access; gated models need a URL that does not require login)"
        : resp.status >= 500
          ? ` (a server error, ${retries + 1} times in a row; try again later)`
          : "";
  return new NetworkError(`fetching ${what} ${url} failed: HTTP ${resp.status}${resp.statusText ? ` ${resp.statusText}` : ""}${hint}`, {
    url,
    status: resp.status,
    reason: "http",
  });
}
