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
// missing cached part).

import { ProgressTracker } from "./progress.js";
import { PART_BYTES, PartSink, cacheable, metaKey, openStore, partKey, partLength } from "./cache.js";
import {
  BadModelError,
  BadRequestError,
  NetworkError,
  QuotaError,
  WebGpuLlmError,
  abortError,
  throwIfAborted,
  toLlmError,
} from "./errors.js";

/** Network failures in a row (without a byte of progress) before a download is given up. */
const MAX_RETRIES = 3;
/** Largest piece handed to one `wasm.write` (its copy lives in wasm memory meanwhile). */
const MAX_WRITE_BYTES = 4 << 20;
const GGUF_MAGIC = [0x47, 0x47, 0x55, 0x46]; // "GGUF"
const TOKENIZER_JSON = "tokenizer.json";
const TOKENIZER_CONFIG_JSON = "tokenizer_config.json";

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
    store,
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
    ctx.progress.setPhase("ready", { fromCache: !ctx.usedNetwork });
    return { modelInfo, modelId: options.modelId ?? modelIdOf(model), kind };
  } catch (err) {
    try {
      wasm.cancelLoad();
    } catch {
      // nothing was loading
    }
    throw await finalError(ctx, err);
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
async function finalError(ctx, err) {
  if (ctx.signal?.aborted) return abortError(ctx.signal);
  if (err?.name === "QuotaExceededError") return await quotaError(ctx, err);
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
  for (const f of [TOKENIZER_JSON, TOKENIZER_CONFIG_JSON]) {
    if (files.includes(f)) texts[f] = await getText(ctx, new URL(f, manifestUrl).href, f);
  }
  progress.setPhase("finalize", { file: undefined });
  let info;
  try {
    info = await wasm.finishLoad(texts[TOKENIZER_JSON]?.text, texts[TOKENIZER_CONFIG_JSON]?.text);
  } catch (err) {
    throw decorate(toLlmError(err), manifestUrl);
  }
  // Text files are cached only now that they proved valid, so a broken one is never pinned.
  if (ctx.store && cacheable(manifestUrl)) {
    if (!manifest.fromCache) await ctx.store.putText(manifestUrl, manifest.text);
    for (const [f, t] of Object.entries(texts)) {
      if (!t.fromCache) await ctx.store.putText(new URL(f, manifestUrl).href, t.text);
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
    return await wasm.finishLoad(undefined, undefined);
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

/** Read each shard's cache record; fail early (QUOTA) when the uncached bytes cannot fit. */
async function planCache(ctx, shards) {
  if (!ctx.store) return;
  let uncached = 0;
  for (const s of shards) {
    if (!s.url || !cacheable(s.url)) continue;
    s.meta = await ctx.store.getJSON(metaKey(s.url));
    if (!(s.meta?.complete && s.meta.bytes === s.bytes)) uncached += s.bytes;
  }
  ctx.bytesToCache = uncached;
  if (uncached === 0 || !globalThis.navigator?.storage?.estimate) return;
  const { usage = 0, quota = Infinity } = await navigator.storage.estimate();
  if (quota - usage < uncached) throw await quotaError(ctx);
}

async function quotaError(ctx, cause) {
  let usage;
  let quota;
  try {
    ({ usage, quota } = await navigator.storage.estimate());
  } catch {
    // no estimate: say what we know
  }
  const needed = ctx.bytesToCache;
  const available = quota !== undefined ? Math.max(0, quota - usage) : undefined;
  const have = available !== undefined ? `; ${mib(available)} available (quota ${mib(quota)}, ${mib(usage)} used)` : "";
  return new QuotaError(
    `caching this model needs ${mib(needed)} of storage${have}. Free space (e.g. clearCache()), ` +
      "ask for more with navigator.storage.persist(), or pass cache: false to load without caching",
    { neededBytes: needed, availableBytes: available, usageBytes: usage, quotaBytes: quota },
    cause ? { cause } : undefined,
  );
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
      if (store && shard.url && cacheable(shard.url)) {
        await store.putJSON(metaKey(shard.url), { ...(shard.meta ?? {}), bytes: shard.bytes, partBytes: PART_BYTES, complete: true });
      }
      return;
    } catch (err) {
      if (err?.name === "QuotaExceededError" && !ctx.signal?.aborted) throw await quotaError(ctx, err);
      const e = ctx.signal?.aborted ? abortError(ctx.signal) : toLlmError(err);
      if (e.code !== "BAD_MODEL" || !shard.url) throw decorate(e, shard.url ?? shard.name, i);
      // Bad bytes (corrupt cache, truncated or altered transfer): forget them everywhere.
      if (store && cacheable(shard.url)) await deleteEntries(store, shard.url, shard.bytes);
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

async function deleteEntries(store, url, bytes) {
  await store.delete(metaKey(url));
  const parts = Math.ceil(bytes / PART_BYTES);
  for (let p = 0; p < parts; p++) await store.delete(partKey(url, p));
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
    await deleteEntries(store, url, Math.max(meta.bytes || 0, shard.bytes)); // another file under this URL
    meta = undefined;
  }
  if (useStore && meta) {
    // Consecutive intact parts from the start: read them from the cache.
    const parts = Math.ceil(shard.bytes / PART_BYTES);
    let k = 0;
    while (k < parts && (await store.partSize(partKey(url, k))) === partLength(shard.bytes, PART_BYTES, k)) k++;
    if (k > 0) {
      progress.setPhase("cache", { shard: i, file: shard.name, fromCache: true });
      try {
        for (let p = 0; p < k; p++) {
          const stream = await store.readPart(partKey(url, p));
          if (!stream) throw new Error(`cached part ${p} vanished`);
          offset = await pump(ctx, i, shard, stream, offset, null);
        }
      } catch (err) {
        if (ctx.signal?.aborted || !(err instanceof ReadFailure || err?.message?.startsWith("cached part"))) throw err;
        // The cache could not be read back (evicted, damaged): fetch this shard from scratch.
        await ctx.wasm.restartShard(i);
        offset = 0;
        progress.setShardBytes(i, 0);
      }
      if (offset === shard.bytes) return;
    }
  }
  progress.setPhase("download", { shard: i, file: shard.name, fromCache: false });
  await download(ctx, i, shard, offset, useStore ? meta : undefined);
}

/**
 * Fetch shard `i` from byte `offset` to its end, writing to the engine and the cache. Breaks in the
 * transfer are resumed with Range requests; a server that answers a Range request with the whole
 * file (or whose file changed since the cached parts were stored) restarts the shard at byte 0.
 */
async function download(ctx, i, shard, offset, meta) {
  const { wasm, store, progress } = ctx;
  const url = shard.url;
  const useStore = !!store && cacheable(url);
  const sink = useStore ? new PartSink(store, url, shard.bytes, offset) : null;
  let failures = 0;
  try {
    for (;;) {
      let resp;
      if (shard.response && offset === 0) {
        resp = shard.response;
        shard.response = undefined;
      } else {
        shard.response?.body?.cancel().catch(() => {});
        shard.response = undefined;
        const init = offset > 0 ? { headers: { Range: `bytes=${offset}-` } } : undefined;
        try {
          resp = await fetchRaw(ctx, url, init);
        } catch (err) {
          if (err instanceof NetworkError && failures < MAX_RETRIES) {
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
        throw httpError(url, resp, "model file");
      }
      const validators = { etag: resp.headers.get("etag") ?? undefined, lastModified: resp.headers.get("last-modified") ?? undefined };
      const changed =
        meta &&
        ((meta.etag && validators.etag && meta.etag !== validators.etag) ||
          (meta.lastModified && validators.lastModified && meta.lastModified !== validators.lastModified));
      if (offset > 0 && (resp.status !== 206 || changed)) {
        if (resp.status === 206) {
          // The file changed since its first parts were cached: get all of it again.
          resp.body?.cancel().catch(() => {});
          meta = undefined;
          await restart();
          continue;
        }
        await restart(); // 200: the server ignored Range; this body is the whole file
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
        if (useStore) {
          meta = { bytes: shard.bytes, partBytes: PART_BYTES, ...validators, complete: false };
          shard.meta = meta;
          await store.putJSON(metaKey(url), meta);
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
          { url },
        );
      }
      await backoff(ctx, ++failures);
    }
  } catch (err) {
    sink?.abort();
    throw err;
  }

  async function restart() {
    await wasm.restartShard(i);
    sink?.restart();
    offset = 0;
    progress.setShardBytes(i, 0);
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
      if (sink) await sink.write(chunk);
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
    throw new NetworkError(
      `could not fetch ${url}: ${err.message}. The browser is offline, the host is unreachable, or a cross-origin server sent no CORS headers (see the console's network panel)`,
      { url },
      { cause: err },
    );
  }
}

/** fetchRaw + retries on network failures and 5xx + NETWORK for any other non-2xx status. */
async function fetchChecked(ctx, url, init, what = "file") {
  for (let failures = 0; ; ) {
    let resp;
    try {
      resp = await fetchRaw(ctx, url, init);
    } catch (err) {
      if (err instanceof NetworkError && failures < MAX_RETRIES) {
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
    throw httpError(url, resp, what);
  }
}

function httpError(url, resp, what) {
  const hint =
    resp.status === 404
      ? " (check the model URL and that the file is deployed)"
      : resp.status === 401 || resp.status === 403
        ? " (the server refused access; gated models need a URL that does not require login)"
        : "";
  return new NetworkError(`fetching ${what} ${url} failed: HTTP ${resp.status}${resp.statusText ? ` ${resp.statusText}` : ""}${hint}`, {
    url,
    status: resp.status,
  });
}
