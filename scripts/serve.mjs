#!/usr/bin/env node
// A tiny static file server for the repository root (no dependencies): the chat app is at /www/app/,
// the npm package at /pkg/, the default model at /models/. Static files only: any other static server
// works as well, as long as it sends `application/wasm` for .wasm and `text/javascript` for .js.
//
//   node scripts/serve.mjs [port] [--host 127.0.0.1] [--root DIR]     (or PORT=8080 node scripts/serve.mjs)
//
// GET and HEAD; single-range `Range` requests (206/416, If-Range honoured) so interrupted model
// downloads resume; ETag/Last-Modified with 304s; `Cache-Control: no-cache` (the app's service worker
// and the package's model cache do the offline caching, not the HTTP cache). Paths outside the root,
// and dot-files (.git, .env), are refused. Port 0 picks a free port.
//
// Content-Security-Policy: every response carries the strict policy the chat app is built for (the
// dedicated worker and the service worker take theirs from their own script's response, so it goes
// on every file, not only the page), plus `Referrer-Policy: no-referrer`:
//   default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self' <model origins>;
//   object-src 'none'; base-uri 'none'; frame-ancestors 'none'
// The model origin comes from www/app/config.js (its default model lives on this server: 'self');
// `--model-origin https://host` (repeatable, or MODEL_ORIGINS="a b") allows models from other origins
// picked in the app with "From a URL" — without it, such a fetch is blocked by connect-src.
// `--no-csp` (or CSP=0) serves without the policy.
// As a module: `const s = await serve({root, port: 0, csp: strictCsp([origin])}); s.origin; s.requests;
// s.csp; await s.close()` (`csp` defaults to none there; pass `true` for strictCsp() with the
// configured model's origin).

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const APP_PATH = "/www/app/";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".webmanifest": "application/manifest+json; charset=utf-8",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".ico": "image/x-icon",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".ts": "text/plain; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".gguf": "application/octet-stream",
  ".bin": "application/octet-stream",
};

/** `Range: bytes=a-b | a- | -n` against `size`: {start, end} (inclusive), null (serve it all) or "bad" (416). */
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(String(header).trim());
  if (!m) return null; // several ranges or other units: the whole file is a valid answer
  if (m[1] === "" && m[2] === "") return "bad";
  let start, end;
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0) return "bad";
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return "bad";
  return { start, end };
}

/**
 * The strict policy: scripts only from this origin (plus WebAssembly compilation, which the package's
 * wasm needs: 'wasm-unsafe-eval', not 'unsafe-eval'), connections only to this origin and
 * `modelOrigins` ("https://host[:port]"), nothing inline, no eval, no plugins, no framing.
 */
export function strictCsp(modelOrigins = []) {
  const extra = [...new Set(modelOrigins.map((o) => new URL(o).origin))].filter((o) => o !== "null");
  return [
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    `connect-src ${["'self'", ...extra].join(" ")}`,
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

/**
 * The origin of the model www/app/config.js is configured with, if it is not this server's own
 * (config.js names it relative to itself: a file: URL here means "same origin"). [] when same-origin
 * or when config.js cannot be read.
 */
export async function configuredModelOrigins() {
  try {
    const { DEFAULT_MODEL } = await import(new URL("../www/app/config.js", import.meta.url).href);
    const url = new URL(DEFAULT_MODEL.url);
    return url.protocol === "http:" || url.protocol === "https:" ? [url.origin] : [];
  } catch {
    return [];
  }
}

/**
 * Serve `root` on `host:port`. Resolves to {server, port, origin, appUrl, requests, close()}; `requests`
 * lists every request answered ({method, path, status, range}).
 */
export async function serve({ root = REPO, port = 8080, host = "127.0.0.1", log = false, csp = false } = {}) {
  root = path.resolve(root);
  if (csp === true) csp = strictCsp(await configuredModelOrigins());
  const policy = csp ? { "Content-Security-Policy": csp, "Referrer-Policy": "no-referrer" } : {};
  const requests = [];
  const server = http.createServer((req, res) => {
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url, "http://x").pathname);
    } catch {
      pathname = "\0";
    }
    const entry = { method: req.method, path: pathname, range: req.headers.range ?? null, status: 0 };
    requests.push(entry);
    const done = (status, headers = {}, body) => {
      entry.status = status;
      if (log) console.log(`${req.method} ${pathname}${entry.range ? ` [${entry.range}]` : ""} → ${status}`);
      res.writeHead(status, { ...policy, ...headers });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return done(405, { Allow: "GET, HEAD", "Content-Type": "text/plain" }, "method not allowed\n");
    if (pathname.includes("\0") || pathname.split("/").some((s) => s.startsWith(".") && s !== "")) {
      return done(404, { "Content-Type": "text/plain" }, "not found\n");
    }
    let file = path.join(root, pathname);
    if (file !== root && !file.startsWith(root + path.sep)) return done(404, { "Content-Type": "text/plain" }, "not found\n");
    let st;
    try {
      st = fs.statSync(file);
      if (st.isDirectory()) {
        if (!pathname.endsWith("/")) return done(301, { Location: `${pathname}/` });
        file = path.join(file, "index.html");
        st = fs.statSync(file);
      }
    } catch {
      st = null;
    }
    if (!st || !st.isFile()) return done(404, { "Content-Type": "text/plain; charset=utf-8" }, `not found: ${pathname}\n`);

    const size = st.size;
    const etag = `"${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    const lastModified = st.mtime.toUTCString();
    const headers = {
      "Content-Type": TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream",
      "Accept-Ranges": "bytes",
      ETag: etag,
      "Last-Modified": lastModified,
      "Cache-Control": "no-cache",
      "X-Content-Type-Options": "nosniff",
      ...policy,
    };
    const inm = req.headers["if-none-match"];
    if (inm && inm.split(",").some((t) => t.trim() === etag)) return done(304, { ETag: etag, "Cache-Control": "no-cache" });

    let start = 0;
    let end = size - 1;
    let status = 200;
    const ifRange = req.headers["if-range"];
    if (req.headers.range && (!ifRange || ifRange === etag || ifRange === lastModified)) {
      const r = parseRange(req.headers.range, size);
      if (r === "bad") return done(416, { "Content-Range": `bytes */${size}` });
      if (r) {
        ({ start, end } = r);
        status = 206;
        headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
      }
    }
    headers["Content-Length"] = String(size === 0 ? 0 : end - start + 1);
    entry.status = status;
    if (log) console.log(`${req.method} ${pathname}${entry.range ? ` [${entry.range}]` : ""} → ${status}`);
    res.writeHead(status, headers);
    if (req.method === "HEAD" || size === 0) return res.end();
    const stream = fs.createReadStream(file, { start, end, highWaterMark: 1 << 20 });
    stream.on("error", () => res.destroy());
    res.on("close", () => stream.destroy());
    stream.pipe(res);
  });
  server.keepAliveTimeout = 2000;
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const actualPort = server.address().port;
  const origin = `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;
  return {
    server,
    port: actualPort,
    origin,
    appUrl: `${origin}${APP_PATH}`,
    csp: csp || null,
    requests,
    close() {
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const opt = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : undefined;
  };
  if (args.includes("-h") || args.includes("--help")) {
    console.log(
      "usage: node scripts/serve.mjs [port] [--host 127.0.0.1] [--root DIR] [--log] [--model-origin https://host ...] [--no-csp]\n" +
        "  (PORT, MODEL_ORIGINS=\"a b\" and CSP=0 env also work; default port 8080; strict Content-Security-Policy on unless --no-csp)",
    );
    process.exit(0);
  }
  const modelOrigins = (process.env.MODEL_ORIGINS ?? "").split(/[\s,]+/).filter(Boolean);
  for (let o; (o = opt("--model-origin")) !== undefined; ) modelOrigins.push(o);
  const noCsp = args.includes("--no-csp") || process.env.CSP === "0";
  let csp = false;
  if (!noCsp) {
    try {
      csp = strictCsp([...(await configuredModelOrigins()), ...modelOrigins]);
    } catch (err) {
      console.error(`bad --model-origin / MODEL_ORIGINS: ${err.message} (expected e.g. https://huggingface.co)`);
      process.exit(1);
    }
  }
  const host = opt("--host") ?? process.env.HOST ?? "127.0.0.1";
  const root = opt("--root") ?? REPO;
  const log = args.includes("--log");
  const portArg = args.find((a) => /^\d+$/.test(a));
  const port = Number(portArg ?? process.env.PORT ?? 8080);
  let s;
  try {
    s = await serve({ root, port, host, log, csp });
  } catch (err) {
    console.error(err.code === "EADDRINUSE" ? `port ${port} is in use: pass another one (node scripts/serve.mjs 8081)` : String(err));
    process.exit(1);
  }
  const model = path.join(root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
  console.log(`Serving ${root} at ${s.origin}/`);
  console.log(
    csp
      ? `Content-Security-Policy: ${csp}\n  (models from other origins: --model-origin https://host; no policy: --no-csp)`
      : "Content-Security-Policy: none (--no-csp)",
  );
  if (!fs.existsSync(path.join(root, "pkg", "wasm", "webgpu_llm.js"))) {
    console.log("warning: pkg/wasm/ is not built; run `bash scripts/build-pkg.sh` first");
  }
  if (!fs.existsSync(model)) console.log("note: the default model is missing; `bash scripts/fetch-model.sh` fetches it (or pick another model in the app)");
  console.log(`\n  Chat app: ${s.appUrl}\n\n(WebGPU needs a secure context: use this 127.0.0.1/localhost address or https. Ctrl+C stops.)`);
}
