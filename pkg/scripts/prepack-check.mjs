#!/usr/bin/env node
// The package's `prepack` check (npm pack / npm publish run it in pkg/): refuse to pack a package whose
// wasm/ is missing a file the package loads, or was built from other sources than the repository's.
//
//   node scripts/prepack-check.mjs            check (exit 1 with the reason and the rebuild command)
//   node scripts/prepack-check.mjs --stamp    write wasm/build-stamp.json (scripts/build-pkg.sh does this)
//   node scripts/prepack-check.mjs --hash     print the sources' hash (build-pkg.sh takes it before building)
//   ... --stamp --source-hash HEX --since MS  stamp with a hash taken before the build (at time MS, ms since
//                                             the epoch): sources edited during the build then make it stale
//
// Freshness: scripts/build-pkg.sh writes wasm/build-stamp.json with a SHA-256 over every file the wasm
// is built from (src/, shaders/, vendor/, Cargo.toml, Cargo.lock, .cargo/config.toml, the build script)
// and the SHA-256 of each built file. The check recomputes both: a source edited since the build, or a
// wasm/ file changed or replaced afterwards, fails. This file is not part of the published package.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPO = path.resolve(PKG, "..");
const WASM = path.join(PKG, "wasm");
const STAMP = path.join(WASM, "build-stamp.json");
const REBUILD = "bash scripts/build-pkg.sh (in the repository root)";
// What the wasm is built from, relative to the repository root (directories are walked).
const SOURCES = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "src", "shaders", "vendor", "scripts/build-pkg.sh"];
// What the package loads from wasm/ (plus whatever its src/*.js name as ../wasm/...).
const REQUIRED = ["webgpu_llm.js", "webgpu_llm_bg.wasm"];

const sha256 = (buf) => crypto.createHash("sha256").update(buf).digest("hex");

function walk(rel, out) {
  const abs = path.join(REPO, rel);
  let st;
  try {
    st = fs.statSync(abs);
  } catch {
    return; // an optional source (e.g. no .cargo/config.toml)
  }
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(abs).sort()) {
      if (name === ".git") continue;
      walk(path.posix.join(rel, name), out);
    }
  } else if (st.isFile()) {
    out.push(rel);
  }
}

/** {hash, files}: one SHA-256 over the sources' relative paths and contents, in a fixed order. */
export function sourceHash() {
  const files = [];
  for (const s of SOURCES) walk(s, files);
  const h = crypto.createHash("sha256");
  for (const f of files) {
    h.update(`${f}\0`);
    h.update(sha256(fs.readFileSync(path.join(REPO, f))));
    h.update("\n");
  }
  return { hash: h.digest("hex"), files };
}

/** The wasm/ files the package needs: the fixed list plus every "../wasm/<name>" in src/*.js. */
function requiredWasmFiles() {
  const names = new Set(REQUIRED);
  const srcDir = path.join(PKG, "src");
  for (const f of fs.readdirSync(srcDir)) {
    if (!f.endsWith(".js")) continue;
    const text = fs.readFileSync(path.join(srcDir, f), "utf8");
    for (const m of text.matchAll(/["'`]\.\.\/wasm\/([^"'`]+)["'`]/g)) names.add(m[1]);
  }
  return [...names].sort();
}

function builtFiles() {
  const out = {};
  for (const name of fs.readdirSync(WASM).sort()) {
    const abs = path.join(WASM, name);
    if (name === path.basename(STAMP) || !fs.statSync(abs).isFile()) continue;
    out[name] = sha256(fs.readFileSync(abs));
  }
  return out;
}

function gitCommit() {
  try {
    const head = fs.readFileSync(path.join(REPO, ".git/HEAD"), "utf8").trim();
    if (!head.startsWith("ref: ")) return head;
    const ref = head.slice(5);
    const loose = path.join(REPO, ".git", ref);
    if (fs.existsSync(loose)) return fs.readFileSync(loose, "utf8").trim();
    const packed = fs.readFileSync(path.join(REPO, ".git/packed-refs"), "utf8");
    return packed.split("\n").find((l) => l.endsWith(` ${ref}`))?.split(" ")[0] ?? null;
  } catch {
    return null;
  }
}

function fail(lines) {
  console.error(`prepack-check: ${lines.join("\n  ")}\n  Rebuild it with: ${REBUILD}`);
  process.exit(1);
}

/** Returns null when wasm/ is complete and fresh, else the reason (an array of lines). */
export function check() {
  const missing = requiredWasmFiles().filter((n) => !fs.existsSync(path.join(WASM, n)));
  if (missing.length) {
    return [`pkg/wasm/ is missing ${missing.map((n) => `wasm/${n}`).join(", ")}: the package would be packed without its wasm module.`];
  }
  let stamp;
  try {
    stamp = JSON.parse(fs.readFileSync(STAMP, "utf8"));
  } catch {
    return [`pkg/wasm/build-stamp.json is missing or unreadable: pkg/wasm/ was not built by scripts/build-pkg.sh (or by an older version of it), so it cannot be shown to match the Rust sources.`];
  }
  const built = builtFiles();
  for (const [name, hash] of Object.entries(stamp.files ?? {})) {
    if (built[name] === undefined) return [`pkg/wasm/${name} is missing (it was built, then removed).`];
    if (built[name] !== hash) return [`pkg/wasm/${name} changed after the build (its SHA-256 differs from pkg/wasm/build-stamp.json).`];
  }
  for (const name of Object.keys(built)) {
    if (!(name in (stamp.files ?? {}))) return [`pkg/wasm/${name} was not produced by the build (not in pkg/wasm/build-stamp.json).`];
  }
  if (!fs.existsSync(path.join(REPO, "Cargo.toml"))) return null; // packing outside the repository: nothing to compare
  const now = sourceHash();
  if (now.hash !== stamp.sourceHash) {
    const since = stamp.sourcesAtMs ?? 0;
    const changed = now.files.filter((f) => fs.statSync(path.join(REPO, f)).mtimeMs > since).slice(0, 5);
    const which = changed.length ? ` Changed since the build: ${changed.join(", ")}.` : "";
    return [`pkg/wasm/ is stale: it was built from other sources than the ones in the repository now (source hash ${String(stamp.sourceHash).slice(0, 12)}… at the build, ${now.hash.slice(0, 12)}… now).${which}`];
  }
  return null;
}

const argv = process.argv.slice(2);
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (argv.includes("--hash")) {
    console.log(sourceHash().hash);
  } else if (argv.includes("--stamp")) {
    const opt = (name) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
    const hash = opt("--source-hash") ?? sourceHash().hash;
    const sourcesAtMs = Number(opt("--since") ?? Date.now());
    if (!/^[0-9a-f]{64}$/.test(hash ?? "")) fail([`--source-hash needs a 64-digit hex SHA-256, got ${hash}`]);
    if (!Number.isFinite(sourcesAtMs)) fail([`--since needs milliseconds since the epoch`]);
    const stamp = { sourceHash: hash, sourcesAt: new Date(sourcesAtMs).toISOString(), sourcesAtMs, commit: gitCommit(), builtAt: new Date().toISOString(), files: builtFiles() };
    fs.writeFileSync(STAMP, `${JSON.stringify(stamp, null, 2)}\n`);
    console.log(`prepack-check: wrote pkg/wasm/build-stamp.json (sources ${hash.slice(0, 12)}…)`);
  } else {
    const reason = check();
    if (reason) fail(reason);
    if (!argv.includes("--quiet")) console.log("prepack-check: pkg/wasm/ is complete and matches the Rust sources");
  }
}
