// Service worker: keeps the app shell, the package's JavaScript and its wasm in a versioned cache so the
// app starts with the network off. Model files are NOT handled here: the package stores them itself
// (Cache API "webgpu-llm-v1", in parts, with Range resume), so their requests pass straight through.
//
// Registered by app.js as `sw.js?pkg=<package folder URL>` (the package's location lives in config.js
// only). On install it fetches the shell and crawls the package's module graph from index.js and
// src/worker.js (static imports and `new URL("…", import.meta.url)` references, which finds the wasm),
// so nothing has to list the package's files by hand.
//
// Requests for cached files are answered from the cache at once and refreshed in the background
// (stale-while-revalidate), so a new deploy shows up on the next visit. Bump VERSION when the set of
// files or the strategy changes; old caches are deleted on activate.

const VERSION = "v2"; // v1 also precached the default model (98 MB): activating v2 deletes that cache
const CACHE = `webgpu-llm-app-shell-${VERSION}`;
const SCOPE = new URL("./", self.location).href;
const PKG_PARAM = new URL(self.location).searchParams.get("pkg");
const PKG = PKG_PARAM ? new URL(PKG_PARAM, self.location).href : null; // null: only the shell is cached

const SHELL = ["./", "index.html", "app.css", "app.js", "config.js", "engine-worker.js", "manifest.webmanifest", "icon.svg"].map(
  (p) => new URL(p, SCOPE).href,
);
const PKG_ENTRIES = PKG ? [new URL("index.js", PKG).href, new URL("src/worker.js", PKG).href] : [];
const ENTRIES = [...SHELL.filter((u) => u.endsWith(".js")), ...PKG_ENTRIES];
const REQUIRED = new Set([...SHELL, ...PKG_ENTRIES]);

/** Relative references a JS module makes: static/dynamic imports with literal specifiers, new URL("x", import.meta.url). */
function references(source, base) {
  const out = new Set();
  const re = /\bfrom\s*["']([^"'\n]+)["']|\bimport\s*\(?\s*["']([^"'\n]+)["']|new\s+URL\(\s*["']([^"'\n]+)["']\s*,\s*import\.meta\.url\s*\)/g;
  for (const m of source.matchAll(re)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!/^(\.{1,2}\/|\/)|^[\w.-]+\.(js|mjs|wasm)$/.test(spec)) continue; // bare specifiers: not files
    try {
      const url = new URL(spec, base);
      // Code only: config.js names the default model with new URL("…gguf", import.meta.url), and the app
      // must not download a model nobody asked for (nor keep a second copy of it here).
      if (url.origin === self.location.origin && /\.(m?js|wasm)$/.test(url.pathname)) out.add(url.href);
    } catch {}
  }
  return out;
}

async function precache() {
  const cache = await caches.open(CACHE);
  const seen = new Set();
  const queue = [...SHELL, ...ENTRIES];
  while (queue.length) {
    const url = queue.shift();
    if (seen.has(url)) continue;
    seen.add(url);
    let resp;
    try {
      resp = await fetch(url, { cache: "no-cache" });
    } catch (err) {
      if (REQUIRED.has(url)) throw err;
      continue;
    }
    if (!resp.ok) {
      if (REQUIRED.has(url)) throw new Error(`precache: ${url} answered HTTP ${resp.status}`);
      continue; // a crawled reference that is not a file (e.g. text in a comment)
    }
    if (/\.m?js$/.test(new URL(url).pathname)) {
      const text = await resp.clone().text();
      for (const ref of references(text, url)) if (!seen.has(ref)) queue.push(ref);
    }
    await cache.put(url, resp);
  }
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith("webgpu-llm-app-shell-") && name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

/** Fetch and store a fresh copy; resolves to the response (or undefined when offline). */
async function refresh(cache, request, key, cached) {
  try {
    const resp = await fetch(request, { cache: "no-cache" });
    const etag = resp.headers.get("ETag");
    const same = etag && cached?.headers.get("ETag") === etag; // unchanged: skip rewriting (the wasm is MBs)
    if (resp.ok && resp.status === 200 && !same) await cache.put(key, resp.clone());
    return resp;
  } catch {
    return undefined;
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || request.headers.has("range")) return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  const navigate = request.mode === "navigate";
  const inApp = url.href.startsWith(SCOPE);
  const inPkg = PKG !== null && url.href.startsWith(PKG);
  if (!navigate && !inApp && !inPkg) return; // models and everything else: straight to the network
  if (navigate && !inApp) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      // A navigation to the app (./ or index.html, with or without a query) is the shell's "./".
      const shell = navigate && (url.href.split(/[?#]/)[0] === SCOPE || url.pathname.endsWith("/index.html"));
      const key = shell ? SCOPE : url.origin + url.pathname;
      const source = navigate ? key : request;
      let cached = await cache.match(key);
      if (cached) {
        event.waitUntil(refresh(cache, source, key, cached));
        // A navigation may not be answered with a redirected response: copy it.
        if (navigate && cached.redirected) cached = new Response(cached.body, cached);
        return cached;
      }
      const fresh = await refresh(cache, source, key);
      if (fresh) return fresh;
      return new Response(`offline, and ${url.pathname} is not in the app's offline cache`, {
        status: 504,
        headers: { "Content-Type": "text/plain; charset=utf-8" },
      });
    })(),
  );
});
