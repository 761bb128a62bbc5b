// Static HTTP server for the browser tests: no dependencies (node:http).
//
// - Serves URL prefixes from directories (`mounts`: {"/pkg/": "<repo>/pkg", ...}) on 127.0.0.1 at a
//   random port. GET and HEAD; single `Range: bytes=a-b | a- | -n` requests get 206 (If-Range honoured,
//   ETag/Last-Modified sent), unsatisfiable ones 416.
// - Model files are sent with `Cache-Control: no-store`, so a load that makes no request proves the
//   package's own cache (Cache API / OPFS) served it, not the browser's HTTP cache.
// - Every response is logged: {seq, t, method, path, range, status, bytes (the body's length), sent
//   (bytes handed to the socket so far), start, end, cut, corrupted}.
// - Fault injection, from the test process (in-process API below) or from a page
//   (POST /__control with JSON {op: "corrupt"|"cut"|"notFound"|"clearFaults"|"clearLog"|"log", ...}):
//     corrupt(path, {offset = 0, times = 1 | Infinity})  flip one byte (xor 0xff) at file offset `offset`
//                                                        in the next `times` responses that contain it
//     cut(path, {afterBytes, times = 1})                 send `afterBytes` bytes of the body, then destroy
//                                                        the socket (the client sees a truncated body)
//     notFound(path, {times = Infinity})                 answer 404
//     status(path, {code = 503, times = 1, onlyRange})   answer `code` (only to Range requests if onlyRange)
//   `path` is the URL path (e.g. "/m/smol-pkg/shard-00001.bin").
// - Cross-origin isolation headers (COOP/COEP) on every response, so pages may use
//   performance.measureUserAgentSpecificMemory().
//
// Standalone: `node tests/browser/server.mjs [urlPrefix=dir ...]` prints the URL and serves until killed.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".css": "text/css",
  ".txt": "text/plain; charset=utf-8",
  ".ts": "text/plain; charset=utf-8",
};

function contentType(p) {
  return TYPES[path.extname(p).toLowerCase()] ?? "application/octet-stream";
}

/** Parse a single-range `Range` header against `size`: {start, end} (inclusive), null (ignore), or "bad". */
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // multi-range or other units: serve the whole file (allowed by RFC 9110)
  let start, end;
  if (m[1] === "" && m[2] === "") return "bad";
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

export async function startServer({ mounts, quiet = true } = {}) {
  const faults = { corrupt: new Map(), cut: new Map(), notFound: new Map(), status: new Map() };
  const log = [];
  let seq = 0;
  const t0 = Date.now();

  const resolve = (urlPath) => {
    // Longest prefix first.
    const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
    for (const prefix of prefixes) {
      if (urlPath.startsWith(prefix)) {
        const root = path.resolve(mounts[prefix]);
        const rel = decodeURIComponent(urlPath.slice(prefix.length));
        const file = path.resolve(root, rel === "" ? "index.html" : rel);
        if (file !== root && !file.startsWith(root + path.sep)) return null;
        return file;
      }
    }
    return null;
  };

  const takeFault = (map, p) => {
    const f = map.get(p);
    if (!f) return null;
    return f;
  };
  const useFault = (map, p, f) => {
    f.times -= 1;
    if (f.times <= 0) map.delete(p);
  };

  const record = (entry) => {
    const e = { seq: ++seq, t: Date.now() - t0, ...entry };
    log.push(e);
    if (!quiet) console.log(`[server] ${e.method} ${e.path} ${e.range ?? "-"} → ${e.status} ${e.bytes ?? ""}${e.cut ? " (cut)" : ""}${e.corrupted ? " (corrupted)" : ""}`);
    return e;
  };

  const control = (body) => {
    switch (body.op) {
      case "corrupt": api.corrupt(body.path, body); return { ok: true };
      case "cut": api.cut(body.path, body); return { ok: true };
      case "notFound": api.notFound(body.path, body); return { ok: true };
      case "status": api.status(body.path, body); return { ok: true };
      case "clearFaults": api.clearFaults(); return { ok: true };
      case "clearLog": api.clearLog(); return { ok: true };
      case "log": return { log };
      default: throw new Error(`unknown op ${body.op}`);
    }
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const p = url.pathname;
    const common = {
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cross-Origin-Resource-Policy": "same-origin",
    };
    if (p === "/__control") {
      let data = "";
      req.on("data", (c) => (data += c));
      req.on("end", () => {
        try {
          const out = control(JSON.parse(data || "{}"));
          res.writeHead(200, { ...common, "Content-Type": "application/json", "Cache-Control": "no-store" });
          res.end(JSON.stringify(out));
        } catch (e) {
          res.writeHead(400, { ...common, "Content-Type": "text/plain" });
          res.end(String(e));
        }
      });
      return;
    }
    const rangeHeader = req.headers.range;
    const base = { method: req.method, path: p, range: rangeHeader ?? null, ifRange: req.headers["if-range"] ?? null };
    const fail = (status, msg) => {
      record({ ...base, status, bytes: 0 });
      res.writeHead(status, { ...common, "Content-Type": "text/plain", "Cache-Control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : msg);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return fail(405, "method not allowed");
    const nf = takeFault(faults.notFound, p);
    if (nf) {
      useFault(faults.notFound, p, nf);
      return fail(404, "not found (injected)");
    }
    const sf = takeFault(faults.status, p);
    if (sf && (!sf.onlyRange || rangeHeader)) {
      useFault(faults.status, p, sf);
      return fail(sf.code, `HTTP ${sf.code} (injected)`);
    }
    const file = resolve(p);
    let st;
    try {
      st = file && fs.statSync(file);
    } catch {}
    if (!st || !st.isFile()) return fail(404, "not found");

    const size = st.size;
    const etag = `"${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    const lastModified = st.mtime.toUTCString();
    let start = 0, end = size - 1, status = 200;
    if (rangeHeader) {
      const ifRange = req.headers["if-range"];
      const rangeValid = !ifRange || ifRange === etag || ifRange === lastModified;
      if (rangeValid) {
        const r = parseRange(rangeHeader, size);
        if (r === "bad") {
          record({ ...base, status: 416, bytes: 0 });
          res.writeHead(416, { ...common, "Content-Range": `bytes */${size}`, "Cache-Control": "no-store" });
          return res.end();
        }
        if (r) ({ start, end } = r), (status = 206);
      }
    }
    const length = size === 0 ? 0 : end - start + 1;
    const isModel = !/\.(html|js|mjs|css|wasm|ts|map)$/.test(p) || p.startsWith("/m/");
    const headers = {
      ...common,
      "Content-Type": contentType(p),
      "Content-Length": String(length),
      "Accept-Ranges": "bytes",
      ETag: etag,
      "Last-Modified": lastModified,
      "Cache-Control": isModel ? "no-store" : "no-cache",
    };
    if (status === 206) headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
    res.writeHead(status, headers);
    const entry = record({ ...base, status, bytes: req.method === "HEAD" ? 0 : length, sent: 0, start, end });
    if (req.method === "HEAD" || length === 0) return res.end();

    // Faults for this response.
    let corruptAt = -1;
    const cf = takeFault(faults.corrupt, p);
    if (cf && cf.offset >= start && cf.offset <= end) {
      corruptAt = cf.offset;
      useFault(faults.corrupt, p, cf);
      entry.corrupted = cf.offset;
    }
    let limit = length;
    const cutf = takeFault(faults.cut, p);
    if (cutf && cutf.afterBytes < length) {
      limit = cutf.afterBytes;
      useFault(faults.cut, p, cutf);
      entry.cut = limit;
    }
    let pos = start; // file offset of the next byte to send
    let sent = 0;
    const stream = fs.createReadStream(file, { start, end, highWaterMark: 1 << 20 });
    stream.on("error", () => res.destroy());
    res.on("close", () => stream.destroy());
    stream.on("data", (chunk) => {
      if (corruptAt >= pos && corruptAt < pos + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[corruptAt - pos] ^= 0xff;
      }
      pos += chunk.length;
      if (sent + chunk.length >= limit && limit < length) {
        const part = chunk.subarray(0, limit - sent);
        sent += part.length;
        entry.sent = sent;
        stream.destroy();
        // Flush what we promised, then kill the connection mid-body.
        res.write(part, () => setTimeout(() => res.destroy(), 20));
        return;
      }
      sent += chunk.length;
      entry.sent = sent;
      if (!res.write(chunk)) {
        stream.pause();
        res.once("drain", () => stream.resume());
      }
    });
    stream.on("end", () => {
      if (sent === length) res.end();
    });
  });
  server.keepAliveTimeout = 2000;

  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const port = server.address().port;

  const api = {
    port,
    origin: `http://127.0.0.1:${port}`,
    log,
    /** Entries matching `pred` (a function, a RegExp on the path, or a path prefix string). */
    requests(pred = () => true) {
      const f = typeof pred === "function" ? pred : pred instanceof RegExp ? (e) => pred.test(e.path) : (e) => e.path.startsWith(pred);
      return log.filter(f);
    },
    clearLog() { log.length = 0; },
    corrupt(p, { offset = 0, times = 1 } = {}) { faults.corrupt.set(p, { offset, times: times ?? Infinity }); },
    cut(p, { afterBytes, times = 1 }) { faults.cut.set(p, { afterBytes, times: times ?? Infinity }); },
    notFound(p, { times = Infinity } = {}) { faults.notFound.set(p, { times: times ?? Infinity }); },
    status(p, { code = 503, times = 1, onlyRange = false } = {}) { faults.status.set(p, { code, times: times ?? Infinity, onlyRange }); },
    clearFaults() { for (const m of Object.values(faults)) m.clear(); },
    mount(prefix, dir) { mounts[prefix] = dir; },
    close() {
      server.closeAllConnections?.();
      return new Promise((ok) => server.close(() => ok()));
    },
  };
  return api;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
  const mounts = { "/pkg/": path.join(repo, "pkg"), "/pages/": path.join(repo, "tests/browser/pages"), "/models/": path.join(repo, "models") };
  for (const a of process.argv.slice(2)) {
    const [k, v] = a.split("=");
    mounts[k] = v;
  }
  const s = await startServer({ mounts, quiet: false });
  console.log(`serving ${JSON.stringify(mounts)} at ${s.origin}`);
}
