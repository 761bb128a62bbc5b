// Fault-test page: the shared harness (window.H, harness.js) plus helpers that tamper with what the
// package cached (window.F), for tests/browser/faults.mjs. Returns plain JSON, as the harness does.

import "./harness.js";
import { CACHE_NAME, metaKey, partKey } from "/pkg/src/cache.js";

async function opfsName(key) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function opfsFile(key) {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle(CACHE_NAME);
  return await dir.getFileHandle(await opfsName(key));
}

const realEstimate = navigator.storage.estimate.bind(navigator.storage);

const F = {
  /**
   * Damage part `part` of `url` in a store after it was stored: `truncate` to `keep` bytes, or `flip`
   * the byte at `at`. The Cache API entry keeps its headers (the stored length the package wrote).
   */
  async damagePart({ store, url, part = 0, mode, keep, at }) {
    const key = partKey(new URL(url, location.href).href, part);
    if (store === "cache-api") {
      const cache = await caches.open(CACHE_NAME);
      const r = await cache.match(key);
      if (!r) return { ok: false, error: `no Cache API entry ${key}` };
      let buf = new Uint8Array(await r.arrayBuffer());
      const before = buf.length;
      if (mode === "truncate") buf = buf.slice(0, keep);
      else buf[at] ^= 0xff;
      await cache.put(key, new Response(buf, { headers: r.headers }));
      return { ok: true, before, after: buf.length, header: r.headers.get("x-webgpu-llm-bytes") };
    }
    const h = await opfsFile(key);
    const before = (await h.getFile()).size;
    const w = await h.createWritable({ keepExistingData: true });
    if (mode === "truncate") await w.truncate(keep);
    else {
      const b = new Uint8Array(await (await h.getFile()).slice(at, at + 1).arrayBuffer());
      await w.write({ type: "write", position: at, data: new Uint8Array([b[0] ^ 0xff]) });
    }
    await w.close();
    return { ok: true, before, after: (await h.getFile()).size };
  },

  /** The package's record for `url` ({bytes, partBytes, etag, lastModified, complete}) in a store. */
  async record({ store, url }) {
    const key = metaKey(new URL(url, location.href).href);
    try {
      if (store === "cache-api") {
        const r = await (await caches.open(CACHE_NAME)).match(key);
        return r ? JSON.parse(await r.text()) : null;
      }
      return JSON.parse(await (await (await opfsFile(key)).getFile()).text());
    } catch {
      return null;
    }
  },

  /** SHA-256 (hex) and length of what a store holds as part `part` of `url`. */
  async partSha256({ store, url, part = 0 }) {
    const key = partKey(new URL(url, location.href).href, part);
    let buf;
    if (store === "cache-api") {
      const r = await (await caches.open(CACHE_NAME)).match(key);
      if (!r) return null;
      buf = await r.arrayBuffer();
    } else {
      buf = await (await (await opfsFile(key)).getFile()).arrayBuffer();
    }
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
    return { bytes: buf.byteLength, sha256: Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("") };
  },

  /** Make navigator.storage.estimate() report `fake` (as when other tabs fill the storage meanwhile). */
  fakeEstimate(fake) {
    navigator.storage.estimate = async () => ({ ...fake });
    return true;
  },

  restoreEstimate() {
    navigator.storage.estimate = realEstimate;
    return true;
  },

  async estimate() {
    const { usage, quota } = await realEstimate();
    return { usage, quota };
  },

  /** console.warn lines since the page loaded (the package reports a given-up cache there too). */
  warnings: [],
};

const warn = console.warn.bind(console);
console.warn = (...args) => {
  F.warnings.push(args.map(String).join(" "));
  warn(...args);
};

window.F = F;
