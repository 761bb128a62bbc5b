// Managing what the offline cache holds for a model, without loading it (no wasm, no GPU).

import { PART_BYTES, cacheable, clearStores, metaKey, openStore, partKey } from "./cache.js";
import { normalizeModel } from "./loader.js";
import { toLlmError } from "./errors.js";

/** The cached files of `model`: `{url, kind, bytes?}` entries, from the cached manifest / records. */
async function cachedFiles(store, model) {
  const urls = [normalizeModel(model)].flat().filter((m) => typeof m === "string" && cacheable(m));
  const files = [];
  for (const url of urls) {
    const u = new URL(url);
    const manifestUrl = u.pathname.endsWith("/") ? new URL("manifest.json", u).href : url;
    const text = urls.length === 1 && !/\.gguf$/i.test(u.pathname) ? await store.getText(manifestUrl) : undefined;
    if (text === undefined) {
      files.push({ url, kind: "binary" });
      continue;
    }
    files.push({ url: manifestUrl, kind: "text" });
    let manifest;
    try {
      manifest = JSON.parse(text);
    } catch {
      continue;
    }
    for (const s of Array.isArray(manifest.shards) ? manifest.shards : []) {
      if (typeof s?.file === "string") files.push({ url: new URL(s.file, manifestUrl).href, kind: "binary", bytes: s.bytes });
    }
    for (const f of Array.isArray(manifest.tokenizer?.files) ? manifest.tokenizer.files : []) {
      // The loader fetches (and caches) only these; others (generation_config.json) never.
      const required = f === "tokenizer.json" || f === "tokenizer_config.json" || f === "embedding.json";
      if (typeof f === "string") files.push({ url: new URL(f, manifestUrl).href, kind: "text", optional: !required });
    }
  }
  return files;
}

/**
 * True when a load of `model` would need no network request (every file cached and complete).
 * @param {string | URL | (string | URL)[]} model
 * @param {{cache?: "cache-api" | "opfs"}} [options]
 */
export async function isModelCached(model, options = {}) {
  try {
    const store = await openStore(options.cache ?? "cache-api");
    if (!store) return false;
    const files = await cachedFiles(store, model);
    for (const f of files) {
      if (f.kind === "binary") {
        const meta = await store.getJSON(metaKey(f.url));
        if (!meta?.complete) return false;
      } else if (!f.optional && (await store.getText(f.url)) === undefined) {
        return false;
      }
    }
    return files.length > 0;
  } catch (err) {
    throw toLlmError(err);
  }
}

/**
 * Remove `model`'s files from the cache (a package's manifest, shards and tokenizer files, or a
 * GGUF's parts).
 */
export async function deleteCachedModel(model, options = {}) {
  try {
    const store = await openStore(options.cache ?? "cache-api");
    if (!store) return;
    const files = await cachedFiles(store, model);
    for (const f of files.reverse()) {
      if (f.kind === "text") {
        await store.delete(f.url);
        continue;
      }
      const meta = await store.getJSON(metaKey(f.url));
      const bytes = meta?.bytes ?? f.bytes ?? 0;
      const partBytes = meta?.partBytes ?? PART_BYTES;
      await store.delete(metaKey(f.url));
      for (let p = 0; p * partBytes < bytes; p++) await store.delete(partKey(f.url, p));
    }
  } catch (err) {
    throw toLlmError(err);
  }
}

/** Remove everything this package cached, in both the Cache API and OPFS. */
export async function clearCache() {
  try {
    await clearStores();
  } catch (err) {
    throw toLlmError(err);
  }
}
