// Offline cache for model files. Two stores with one interface: the Cache API (default) and the
// Origin Private File System (`cache: "opfs"`).
//
// A model file (package shard or GGUF part) is stored as fixed-size parts of PART_BYTES, each written
// as a stream while the download passes through (never buffered whole), plus a small JSON record
// `{bytes, partBytes, etag, lastModified, complete}`. A part is stored only once all of its bytes
// arrived, so after an interrupted download the parts before the gap are intact and the download
// resumes with an HTTP Range request from the first missing part. `complete` is set once the file
// passed its checks (size, sha256), so a later load reads it without touching the network.
// Text files (manifest.json, tokenizer files) are stored whole under their own URL.
// A write that fails (quota, storage error) never fails a load: PartSink reports it to its
// `onError` and stops; the loader gives caching up for that load (loader.js, giveUpCache).

/** Bytes per stored part: large enough to keep the entry count small, small enough to resume cheaply. */
export const PART_BYTES = 32 << 20;

/** Name of the Cache API cache and of the OPFS directory. Bump the suffix if the layout changes. */
export const CACHE_NAME = "webgpu-llm-v1";

const TAG = "webgpu-llm";

/** Cache key of part `i` of `url`. A query parameter, not a fragment: Cache API matching ignores fragments. */
export function partKey(url, i) {
  return withParam(url, `part-${i}`);
}

/** Cache key of `url`'s completion record. */
export function metaKey(url) {
  return withParam(url, "meta");
}

function withParam(url, value) {
  const u = new URL(url);
  u.hash = "";
  u.searchParams.append(TAG, value);
  return u.href;
}

/** Only http(s) URLs are cached (blob:/data: URLs are local already). */
export function cacheable(url) {
  return /^https?:/i.test(url);
}

/** Bytes of part `i` of a file of `bytes` bytes. */
export function partLength(bytes, partBytes, i) {
  return Math.max(0, Math.min(partBytes, bytes - i * partBytes));
}

/**
 * The store for a `cache` option: `undefined`/`true` → Cache API where available (else none),
 * `"cache-api"` / `"opfs"` → that store (BAD_REQUEST-style Error if missing), `false` → none.
 * @returns {Promise<Store | null>}
 */
export async function openStore(option) {
  if (option === false || option === "none") return null;
  if (option === undefined || option === true || option === "cache-api") {
    if (typeof caches === "undefined") {
      if (option === "cache-api") {
        throw storeError("the Cache API is unavailable here (it needs a secure context: https:// or localhost)");
      }
      return null;
    }
    return new CacheApiStore(await caches.open(CACHE_NAME));
  }
  if (option === "opfs") {
    if (!globalThis.navigator?.storage?.getDirectory) {
      throw storeError("OPFS (navigator.storage.getDirectory) is unavailable in this browser; use cache: \"cache-api\"");
    }
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle(CACHE_NAME, { create: true });
    return new OpfsStore(dir);
  }
  throw storeError(`unknown cache option ${JSON.stringify(option)}: use "cache-api" (default), "opfs" or false`);
}

function storeError(message) {
  const e = new Error(message);
  e.code = "BAD_REQUEST";
  return e;
}

/** Delete every cached file of this package (both stores). */
export async function clearStores() {
  if (typeof caches !== "undefined") await caches.delete(CACHE_NAME);
  if (globalThis.navigator?.storage?.getDirectory) {
    const root = await navigator.storage.getDirectory();
    try {
      await root.removeEntry(CACHE_NAME, { recursive: true });
    } catch (err) {
      if (err?.name !== "NotFoundError") throw err;
    }
  }
}

/**
 * Streams bytes into consecutive parts of one file, opening and closing a part writer at each part
 * boundary; at most one part is in flight. The first write that fails (QuotaExceededError, …) drops
 * the open part, is handed to `onError`, and makes later writes do nothing.
 */
export class PartSink {
  /**
   * @param {Store} store
   * @param {string} url the file's URL (cache key base)
   * @param {number} bytes the file's size
   * @param {number} offset where the bytes written next start; must be a part boundary
   * @param {number} [partBytes]
   * @param {(err: unknown) => unknown} [onError] called (and awaited) once, with the first failed write
   */
  constructor(store, url, bytes, offset = 0, partBytes = PART_BYTES, onError = undefined) {
    if (offset % partBytes !== 0) throw new Error(`PartSink: offset ${offset} is not a part boundary`);
    this.store = store;
    this.url = url;
    this.bytes = bytes;
    this.partBytes = partBytes;
    this.offset = offset;
    this.writer = null; // the open part, if any
    this.written = 0; // bytes in the open part
    this.onError = onError;
    this.failed = null; // the first write error
  }

  /** The next bytes of the file (never rejects: a failure goes to `onError`). */
  async write(chunk) {
    if (this.failed) return;
    try {
      await this.#write(chunk);
    } catch (err) {
      this.failed = err ?? new Error("cache write failed");
      this.abort();
      await this.onError?.(err);
    }
  }

  async #write(chunk) {
    let pos = 0;
    while (pos < chunk.length) {
      const i = Math.floor(this.offset / this.partBytes);
      const len = partLength(this.bytes, this.partBytes, i);
      if (len === 0) return; // past the end: the caller reports the size error
      if (!this.writer) {
        this.writer = await this.store.writePart(partKey(this.url, i), len);
        this.written = 0;
      }
      const n = Math.min(len - this.written, chunk.length - pos);
      this.writer.write(pos === 0 && n === chunk.length ? chunk : chunk.subarray(pos, pos + n));
      this.written += n;
      this.offset += n;
      pos += n;
      if (this.written === len) {
        const w = this.writer;
        this.writer = null;
        await w.close();
      }
    }
  }

  /** Drop the open part (it is not stored) and start again at byte 0. */
  restart() {
    this.abort();
    this.offset = 0;
  }

  /** Drop the open part; stored parts stay. */
  abort() {
    if (this.writer) {
      this.writer.abort();
      this.writer = null;
    }
  }
}

/**
 * @typedef {object} PartWriter
 * @property {(chunk: Uint8Array) => void} write queue the next bytes
 * @property {() => Promise<void>} close store the part (rejects with QuotaExceededError etc.)
 * @property {() => void} abort drop the part
 */

/** Store on the Cache API: each entry a Response keyed by an http(s) URL. */
class CacheApiStore {
  constructor(cache) {
    this.cache = cache;
    this.kind = "cache-api";
  }

  async getText(key) {
    const r = await this.cache.match(key);
    return r ? await r.text() : undefined;
  }

  async putText(key, text) {
    await this.cache.put(key, new Response(text, { headers: { "content-type": "text/plain; charset=utf-8" } }));
  }

  async getJSON(key) {
    const t = await this.getText(key);
    if (t === undefined) return undefined;
    try {
      return JSON.parse(t);
    } catch {
      return undefined;
    }
  }

  putJSON(key, value) {
    return this.putText(key, JSON.stringify(value));
  }

  /** Stored length of a part (from the header written with it), or undefined. */
  async partSize(key) {
    const r = await this.cache.match(key);
    if (!r) return undefined;
    const n = Number(r.headers.get("x-webgpu-llm-bytes"));
    return Number.isFinite(n) ? n : undefined;
  }

  async readPart(key) {
    const r = await this.cache.match(key);
    return r?.body ?? undefined;
  }

  async writePart(key, bytes) {
    let controller;
    const body = new ReadableStream({
      start(c) {
        controller = c;
      },
    });
    const done = this.cache.put(
      key,
      new Response(body, { headers: { "content-type": "application/octet-stream", "x-webgpu-llm-bytes": String(bytes) } }),
    );
    // Observed through close(); this keeps an aborted part's rejection from being "unhandled".
    let failure;
    done.catch((err) => {
      failure = err;
    });
    return {
      // put() may fail (quota) while the body is still streaming: it cancels the body, and the next
      // enqueue throws a TypeError; report put()'s own error instead.
      write: (chunk) => {
        if (failure) throw failure;
        try {
          controller.enqueue(chunk);
        } catch (err) {
          throw failure ?? err;
        }
      },
      close: async () => {
        controller.close();
        await done;
      },
      abort: () => {
        try {
          controller.error(new DOMException("part abandoned", "AbortError"));
        } catch {
          // already closed or errored
        }
      },
    };
  }

  async delete(key) {
    await this.cache.delete(key);
  }
}

/** Store on the Origin Private File System: one file per key, named by the key's SHA-256. */
class OpfsStore {
  constructor(dir) {
    this.dir = dir;
    this.kind = "opfs";
  }

  async handle(key, create) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
    const name = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    try {
      return await this.dir.getFileHandle(name, { create });
    } catch (err) {
      if (!create && (err?.name === "NotFoundError" || err?.name === "TypeMismatchError")) return undefined;
      throw err;
    }
  }

  async file(key) {
    const h = await this.handle(key, false);
    return h ? await h.getFile() : undefined;
  }

  async getText(key) {
    const f = await this.file(key);
    return f ? await f.text() : undefined;
  }

  async putText(key, text) {
    const h = await this.handle(key, true);
    const w = await h.createWritable();
    try {
      await w.write(text);
      await w.close();
    } catch (err) {
      await w.abort().catch(() => {});
      throw err;
    }
  }

  async getJSON(key) {
    const t = await this.getText(key);
    if (t === undefined || t === "") return undefined;
    try {
      return JSON.parse(t);
    } catch {
      return undefined;
    }
  }

  putJSON(key, value) {
    return this.putText(key, JSON.stringify(value));
  }

  async partSize(key) {
    return (await this.file(key))?.size;
  }

  async readPart(key) {
    return (await this.file(key))?.stream();
  }

  async writePart(key, _bytes) {
    const h = await this.handle(key, true);
    if (typeof h.createWritable !== "function") {
      throw storeError("this browser's OPFS has no createWritable(); use cache: \"cache-api\"");
    }
    // createWritable writes to a swap file that replaces the file only on close(), so an
    // abandoned part never shows up with partial contents.
    const w = await h.createWritable();
    let chain = Promise.resolve();
    let failed = null;
    return {
      write: (chunk) => {
        chain = chain.then(() => (failed ? undefined : w.write(chunk))).catch((err) => {
          failed ??= err;
        });
      },
      close: async () => {
        await chain;
        if (failed) {
          await w.abort().catch(() => {});
          throw failed;
        }
        await w.close();
      },
      abort: () => {
        chain.then(() => w.abort()).catch(() => {});
      },
    };
  }

  async delete(key) {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
    const name = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    try {
      await this.dir.removeEntry(name);
    } catch (err) {
      if (err?.name !== "NotFoundError") throw err;
    }
  }
}

/** @typedef {CacheApiStore | OpfsStore} Store */
