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
//     cut(path, {afterBytes, times = 1, delayMs = 20})   send `afterBytes` bytes of the body, then destroy
//                                                        the socket `delayMs` later (the client sees a
//                                                        truncated body; a client that reads slowly may
//                                                        lose the buffered bytes unless delayMs is long)
//     notFound(path, {times = Infinity})                 answer 404
//     status(path, {code = 503, times = 1, onlyRange, onlyFull})  answer `code` (only to Range requests if
//                                                        onlyRange; only to requests without Range if onlyFull)
//     stall(path, {afterBytes, ms, times = 1})           send `afterBytes` bytes of the body, then nothing for
//                                                        `ms` ms (the connection stays open), then the rest
//     change(path, {flip | data | file, times = Infinity}) serve other content under `path`: the real file with
//                                                        the byte at file offset `flip` xor 0xff, or `data`
//                                                        (a Buffer; from a page: base64 `dataBase64`), or
//                                                        another `file`; with its own ETag and Last-Modified,
//                                                        for the next `times` responses (then the real file)
//     ignoreIfRange(path, {times = Infinity})            answer Range requests with 206 even when If-Range
//                                                        names other validators (a broken server)
//   `path` is the URL path (e.g. "/m/smol-pkg/shard-00001.bin").
// - Cross-origin isolation headers (COOP/COEP, CORP same-origin) on every response unless
//   `isolation: false`, so pages may use performance.measureUserAgentSpecificMemory().
// - `cors: true`: CORS headers for any origin (Access-Control-Allow-Origin: *, Range and If-Range
//   allowed in preflights, Content-Length/Content-Range/ETag/Last-Modified exposed). Off by default: a
//   page on another origin then gets no CORS headers, as from a server that was never set up for it.
//
// Standalone: `node tests/browser/server.mjs [urlPrefix=dir ...]` prints the URL and serves until killed.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
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

/** Chunks of `buf[start..=end]`, as a file stream would deliver them. */
function* bufferChunks(buf, start, end) {
  for (let o = start; o <= end; o += 1 << 16) yield buf.subarray(o, Math.min(end + 1, o + (1 << 16)));
}

/** res.write with backpressure; resolves false once the connection is gone. */
function writeChunk(res, chunk) {
  return new Promise((ok) => {
    if (res.destroyed) return ok(false);
    if (res.write(chunk)) return ok(true);
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      ok(!res.destroyed);
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/**
 * Send the body from `source` (an async iterable of chunks starting at file offset `start`): flip the
 * byte at `corruptAt`, pause `stallMs` after `stallAt` bytes, and destroy the socket after `limit`
 * bytes when that is short of `length`. `entry.sent` follows what was handed to the socket.
 */
async function sendBody({ res, entry, source, start, length, corruptAt, limit, cutDelay = 20, stallAt, stallMs }) {
  let pos = start; // file offset of the next byte to send
  let sent = 0;
  let closed = false;
  res.on("close", () => {
    closed = true;
    source.destroy?.();
  });
  try {
    for await (let chunk of source) {
      if (closed) return;
      if (corruptAt >= pos && corruptAt < pos + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[corruptAt - pos] ^= 0xff;
      }
      pos += chunk.length;
      while (chunk.length > 0) {
        if (limit < length && sent >= limit) {
          res.flushHeaders();
          setTimeout(() => res.destroy(), cutDelay);
          return;
        }
        // The next stop: the stall point, the cut, or the end of this chunk.
        let n = chunk.length;
        if (stallAt >= sent && stallAt < sent + n) n = stallAt - sent;
        if (limit < length && limit < sent + n) n = limit - sent;
        if (n > 0) {
          const piece = chunk.subarray(0, n);
          chunk = chunk.subarray(n);
          sent += n;
          entry.sent = sent;
          if (limit < length && sent === limit) {
            // Flush what we promised, then kill the connection mid-body.
            source.destroy?.();
            res.write(piece, () => setTimeout(() => res.destroy(), cutDelay));
            return;
          }
          if (!(await writeChunk(res, piece))) return;
        }
        if (sent === stallAt) {
          stallAt = -1;
          const t = Date.now();
          await new Promise((ok) => setTimeout(ok, stallMs));
          entry.stalled.actualMs = Date.now() - t;
          if (closed) return;
        }
      }
    }
    if (sent === length) res.end();
    else res.destroy();
  } catch {
    res.destroy();
  }
}

export async function startServer({ mounts, quiet = true, isolation = true, cors = false } = {}) {
  const faults = {
    corrupt: new Map(),
    cut: new Map(),
    notFound: new Map(),
    status: new Map(),
    stall: new Map(),
    change: new Map(),
    ignoreIfRange: new Map(),
  };
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
    if (!quiet) console.log(`[server] ${e.method} ${e.path} ${e.range ?? "-"} → ${e.status} ${e.bytes ?? ""}${e.cut ? " (cut)" : ""}${e.corrupted ? " (corrupted)" : ""}${e.changed ? " (changed)" : ""}${e.stalled ? " (stalled)" : ""}`);
    return e;
  };

  const control = (body) => {
    switch (body.op) {
      case "corrupt": api.corrupt(body.path, body); return { ok: true };
      case "cut": api.cut(body.path, body); return { ok: true };
      case "notFound": api.notFound(body.path, body); return { ok: true };
      case "status": api.status(body.path, body); return { ok: true };
      case "stall": api.stall(body.path, body); return { ok: true };
      case "change":
        api.change(body.path, { ...body, data: body.dataBase64 !== undefined ? Buffer.from(body.dataBase64, "base64") : undefined });
        return { ok: true };
      case "ignoreIfRange": api.ignoreIfRange(body.path, body); return { ok: true };
      case "clearFaults": api.clearFaults(); return { ok: true };
      case "clearLog": api.clearLog(); return { ok: true };
      case "log": return { log };
      default: throw new Error(`unknown op ${body.op}`);
    }
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const p = url.pathname;
    const common = isolation
      ? {
          "Cross-Origin-Opener-Policy": "same-origin",
          "Cross-Origin-Embedder-Policy": "require-corp",
          "Cross-Origin-Resource-Policy": "same-origin",
        }
      : {};
    if (cors) {
      Object.assign(common, {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "Content-Length, Content-Range, ETag, Last-Modified, Accept-Ranges",
        "Cross-Origin-Resource-Policy": "cross-origin",
      });
      if (req.method === "OPTIONS") {
        record({ method: "OPTIONS", path: p, range: null, ifRange: null, status: 204, bytes: 0 });
        res.writeHead(204, {
          ...common,
          "Access-Control-Allow-Methods": "GET, HEAD",
          "Access-Control-Allow-Headers": "Range, If-Range",
          "Access-Control-Max-Age": "600",
        });
        return res.end();
      }
    }
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
    if (sf && (!sf.onlyRange || rangeHeader) && (!sf.onlyFull || !rangeHeader)) {
      useFault(faults.status, p, sf);
      return fail(sf.code, `HTTP ${sf.code} (injected)`);
    }
    const file = resolve(p);
    let st;
    try {
      st = file && fs.statSync(file);
    } catch {}
    if (!st || !st.isFile()) return fail(404, "not found");

    // What this response serves: the file, or (change) other content with its own validators.
    let size = st.size;
    let etag = `"${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    let lastModified = st.mtime.toUTCString();
    let data = null; // a Buffer served instead of the file
    const chf = takeFault(faults.change, p);
    if (chf && req.method === "GET") {
      useFault(faults.change, p, chf);
      data = chf.data ?? (chf.file ? fs.readFileSync(chf.file) : fs.readFileSync(file));
      if (chf.flip !== undefined) {
        data = Buffer.from(data);
        data[chf.flip] ^= 0xff;
      }
      size = data.length;
      etag = `"changed-${crypto.createHash("sha256").update(data).digest("hex").slice(0, 16)}"`;
      lastModified = new Date(Date.UTC(2001, 0, 1)).toUTCString();
    }
    let start = 0, end = size - 1, status = 200;
    if (rangeHeader) {
      const ifRange = req.headers["if-range"];
      const iif = takeFault(faults.ignoreIfRange, p);
      if (iif && ifRange) useFault(faults.ignoreIfRange, p, iif);
      const rangeValid = !ifRange || ifRange === etag || ifRange === lastModified || !!iif;
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
    const entry = record({ ...base, status, bytes: req.method === "HEAD" ? 0 : length, sent: 0, start, end, etag, ...(data ? { changed: true } : {}) });
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
    let cutDelay = 20;
    const cutf = takeFault(faults.cut, p);
    if (cutf && cutf.afterBytes < length) {
      limit = cutf.afterBytes;
      cutDelay = cutf.delayMs ?? 20;
      useFault(faults.cut, p, cutf);
      entry.cut = limit;
    }
    let stallAt = -1; // body bytes after which the response pauses
    let stallMs = 0;
    const stf = takeFault(faults.stall, p);
    if (stf && stf.afterBytes < limit) {
      stallAt = stf.afterBytes;
      stallMs = stf.ms;
      useFault(faults.stall, p, stf);
      entry.stalled = { afterBytes: stallAt, ms: stallMs };
    }
    sendBody({ res, entry, source: data ? bufferChunks(data, start, end) : fs.createReadStream(file, { start, end, highWaterMark: 1 << 20 }), start, length, corruptAt, limit, cutDelay, stallAt, stallMs });
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
    cut(p, { afterBytes, times = 1, delayMs = 20 }) { faults.cut.set(p, { afterBytes, times: times ?? Infinity, delayMs }); },
    notFound(p, { times = Infinity } = {}) { faults.notFound.set(p, { times: times ?? Infinity }); },
    status(p, { code = 503, times = 1, onlyRange = false, onlyFull = false } = {}) { faults.status.set(p, { code, times: times ?? Infinity, onlyRange, onlyFull }); },
    stall(p, { afterBytes, ms, times = 1 }) { faults.stall.set(p, { afterBytes, ms, times: times ?? Infinity }); },
    change(p, { flip, data, file, times = Infinity } = {}) { faults.change.set(p, { flip, data, file, times: times ?? Infinity }); },
    ignoreIfRange(p, { times = Infinity } = {}) { faults.ignoreIfRange.set(p, { times: times ?? Infinity }); },
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
