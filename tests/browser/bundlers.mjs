// The npm package as users consume it: the packed tarball installed into a fresh Vite app and a fresh
// webpack 5 app, each built for production with no configuration for the package, served as static files
// and run in headless Chromium (SwiftShader WebGPU), driven by playwright-core. Run by
// scripts/test-bundlers.sh, which builds pkg/wasm/ if needed and packs the tarball (`npm pack`, so the
// package's prepack check runs).
//
//   node tests/browser/bundlers.mjs --tarball webgpu-llm-X.tgz [--only prepack,vite,webpack] [--keep] [--verbose]
//
// Steps (one PASS/FAIL line each; exit status 1 on any failure):
//   prepack  `npm pack` of copies of pkg/: a copy whose wasm/ lacks webgpu_llm.js, one whose Rust source
//            was edited after the build and one whose .wasm was altered each fail in the prepack check with a
//            message naming the file and scripts/build-pkg.sh; the unchanged copy packs
//   vite     tests/browser/bundlers/vite (vite, pinned, with its lockfile) + the tarball: `vite build`
//   webpack  tests/browser/bundlers/webpack (webpack + webpack-cli, pinned; no webpack.config.js at all) +
//            the tarball: `webpack --mode production`
// Each app is tests/browser/bundlers/app.js: it generates greedy tokens with the engine on the page,
// the worker engine with the package's own worker, and the worker engine with a worker the app makes from
// "webgpu-llm/worker" (pkg/README.md). Checked: every engine generated tokens, all the same ids, no
// failed request, no page error; the .wasm and the workers came from the build's output.
// Model: tests/fixtures/kquant/tiny-q4_k_m.gguf (0.8 MB, a 2-layer llama with a GGUF tokenizer), so the
// test is about packaging, not speed (tests/browser/run.mjs checks the tokens against the CLI's).
// Environment: CHROMIUM (default /usr/lib/chromium/chromium), BROWSER_TEST_TMP (parent of the temp dir,
// default os.tmpdir()), npm's own (npm_config_cache, registry).

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../scripts/serve.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const TEMPLATES = path.join(HERE, "bundlers");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/lib/chromium/chromium";
const MODEL = path.join(REPO, "tests/fixtures/kquant/tiny-q4_k_m.gguf");
const PROMPT = "the cat sat on the mat";
const MAX_TOKENS = 6;

const argv = process.argv.slice(2);
const optArg = (name) => {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return argv[i].includes("=") ? argv[i].split("=").slice(1).join("=") : argv[i + 1];
};
const TARBALL = optArg("--tarball") && path.resolve(optArg("--tarball"));
const ONLY = optArg("--only")?.split(",").filter(Boolean);
const KEEP = argv.includes("--keep");
const VERBOSE = argv.includes("--verbose");

const t0 = Date.now();
const secs = (ms) => (ms / 1000).toFixed(1);
const log = (...a) => console.log(`[${secs(Date.now() - t0).padStart(6)} s]`, ...a);

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}

function sh(cmd, args, { cwd, timeoutMs = 300_000 } = {}) {
  const t = Date.now();
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 << 20, env: { ...process.env, npm_config_update_notifier: "false" } });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (VERBOSE) console.log(`$ (${path.relative(REPO, cwd ?? REPO) || "."}) ${cmd} ${args.join(" ")}  [${secs(Date.now() - t)} s, ${r.status ?? r.signal}]\n${out}`);
  return { status: r.status ?? -1, out, stdout: r.stdout ?? "", ms: Date.now() - t };
}
function shOk(cmd, args, opts) {
  const r = sh(cmd, args, opts);
  if (r.status !== 0) throw new Failure(`${cmd} ${args.join(" ")} failed (${r.status}) in ${opts?.cwd}:\n${r.out.trim().split("\n").slice(-30).join("\n")}`);
  return r;
}

if (!TARBALL || !fs.existsSync(TARBALL)) {
  console.log(`FAIL setup: --tarball ${TARBALL ?? "(not given)"} does not exist (scripts/test-bundlers.sh packs it)`);
  process.exit(1);
}
const tmp = fs.mkdtempSync(path.join(process.env.BROWSER_TEST_TMP ?? os.tmpdir(), "webgpu-llm-bundlers-"));
const results = [];
const consoleLines = [];

async function step(name, fn) {
  if (ONLY && !ONLY.includes(name)) return;
  const t = Date.now();
  try {
    const figures = (await fn()) ?? {};
    const f = Object.entries(figures).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
    results.push({ name, ok: true });
    log(`PASS ${name} (${secs(Date.now() - t)} s) ${f}`);
  } catch (e) {
    results.push({ name, ok: false });
    log(`FAIL ${name} (${secs(Date.now() - t)} s): ${e instanceof Failure ? e.message : e.stack}`);
  }
}

// ---------------------------------------------------------------------------------------------
// prepack: the package's check refuses a missing, stale or altered wasm/

/** A copy of what the wasm is built from plus pkg/ (without node_modules): a repository the check can judge. */
function copyRepo(dest) {
  for (const p of ["Cargo.toml", "Cargo.lock", ".cargo", "src", "shaders", "vendor", "scripts/build-pkg.sh", "pkg"]) {
    const from = path.join(REPO, p);
    if (!fs.existsSync(from)) continue;
    fs.cpSync(from, path.join(dest, p), { recursive: true, preserveTimestamps: true, filter: (s) => !s.includes(`${path.sep}node_modules`) });
  }
  return path.join(dest, "pkg");
}

function pack(pkgDir) {
  return sh("npm", ["pack", "--dry-run", "--json"], { cwd: pkgDir, timeoutMs: 120_000 });
}

async function stepPrepack() {
  const fresh = copyRepo(path.join(tmp, "repo-fresh"));
  const ok = pack(fresh);
  check(ok.status === 0, `npm pack of an unchanged copy of the repository failed (is pkg/wasm/ fresh? scripts/test-bundlers.sh rebuilds it):\n${ok.out}`);
  const listed = JSON.parse(ok.stdout.slice(ok.stdout.indexOf("["))).flatMap((p) => p.files.map((f) => f.path));
  for (const f of ["wasm/webgpu_llm.js", "wasm/webgpu_llm_bg.wasm", "src/worker.js", "index.js"]) check(listed.includes(f), `the tarball lacks ${f}: ${listed.join(", ")}`);
  check(!listed.some((f) => f.startsWith("scripts/") || f.endsWith("build-stamp.json")), `the tarball ships build files: ${listed.join(", ")}`);

  const cases = [
    {
      name: "no wasm/webgpu_llm.js",
      edit: (pkg) => fs.rmSync(path.join(pkg, "wasm/webgpu_llm.js")),
      expect: ["wasm/webgpu_llm.js", "missing"],
    },
    {
      name: "no wasm/ at all",
      edit: (pkg) => fs.rmSync(path.join(pkg, "wasm"), { recursive: true }),
      expect: ["wasm/webgpu_llm.js", "wasm/webgpu_llm_bg.wasm"],
    },
    {
      name: "src/lib.rs edited after the build",
      edit: (pkg) => fs.appendFileSync(path.join(pkg, "../src/lib.rs"), "\n// edited after the build\n"),
      expect: ["stale", "src/lib.rs"],
    },
    {
      name: "a shader edited after the build",
      edit: (pkg) => fs.appendFileSync(path.join(pkg, "../shaders/add.wgsl"), "\n// edited\n"),
      expect: ["stale", "shaders/add.wgsl"],
    },
    {
      name: "the .wasm replaced after the build",
      edit: (pkg) => fs.appendFileSync(path.join(pkg, "wasm/webgpu_llm_bg.wasm"), Buffer.from([0])),
      expect: ["wasm/webgpu_llm_bg.wasm", "changed after the build"],
    },
  ];
  for (const [i, c] of cases.entries()) {
    const pkg = copyRepo(path.join(tmp, `repo-bad-${i}`));
    c.edit(pkg);
    const r = pack(pkg);
    check(r.status !== 0, `npm pack succeeded with ${c.name}`);
    for (const s of [...c.expect, "bash scripts/build-pkg.sh"]) check(r.out.includes(s), `npm pack with ${c.name}: the message does not say "${s}":\n${r.out}`);
    if (VERBOSE || i === 0) log(`  ${c.name}: ${r.out.split("\n").find((l) => l.startsWith("prepack-check:"))}`);
  }
  return { refused: cases.length };
}

// ---------------------------------------------------------------------------------------------
// vite / webpack: install the tarball into a fresh app, build for production, run it in Chromium

const BUNDLERS = {
  vite: { entry: "src/main.js", dist: "dist" },
  webpack: { entry: "src/index.js", dist: "dist", copyIndexHtml: true },
};

let browser;
async function getBrowser() {
  browser ??= await chromium.launchPersistentContext(path.join(tmp, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--enable-unsafe-webgpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
  });
  return browser;
}

const reference = {}; // token ids of the first engine that ran, to compare every other with

async function stepBundler(name) {
  const b = BUNDLERS[name];
  const app = path.join(tmp, `${name}-app`);
  fs.cpSync(path.join(TEMPLATES, name), app, { recursive: true });
  fs.mkdirSync(path.join(app, path.dirname(b.entry)), { recursive: true });
  fs.copyFileSync(path.join(TEMPLATES, "app.js"), path.join(app, b.entry));
  const figures = {};
  figures.ci_s = secs(shOk("npm", ["ci", "--no-audit", "--no-fund"], { cwd: app }).ms);
  figures.add_s = secs(shOk("npm", ["install", "--no-save", "--no-audit", "--no-fund", TARBALL], { cwd: app }).ms);
  check(fs.existsSync(path.join(app, "node_modules/webgpu-llm/wasm/webgpu_llm_bg.wasm")), "the installed package has no wasm/webgpu_llm_bg.wasm");
  const build = shOk("npm", ["run", "build"], { cwd: app });
  figures.build_s = secs(build.ms);
  const dist = path.join(app, b.dist);
  if (b.copyIndexHtml) fs.copyFileSync(path.join(app, "index.html"), path.join(dist, "index.html"));
  const files = fs.readdirSync(dist, { recursive: true }).map(String);
  const wasmFiles = files.filter((f) => f.endsWith(".wasm"));
  check(wasmFiles.length === 1, `the build should emit the package's .wasm once, it emitted: ${wasmFiles.join(", ") || "none"} (files: ${files.join(", ")})`);
  fs.mkdirSync(path.join(dist, "models"), { recursive: true });
  fs.copyFileSync(MODEL, path.join(dist, "models/model.gguf"));

  const server = await serve({ root: dist, port: 0 });
  const context = await getBrowser();
  const page = await context.newPage();
  const pageErrors = [];
  page.on("console", (m) => {
    const line = `[${name} console.${m.type()}] ${m.text()}`;
    consoleLines.push(line);
    if (VERBOSE) console.log(line);
  });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("worker", (w) => consoleLines.push(`[${name}] worker started: ${w.url()}`));
  try {
    await page.goto(`${server.origin}/`);
    await page.waitForFunction(() => window.bundlerTestReady === true || undefined, null, { timeout: 30_000 }).catch(() => {
      throw new Failure(`the app did not start (window.bundlerTestReady unset); page errors: ${pageErrors.join(" | ") || "none"}`);
    });
    const out = await page.evaluate((o) => window.runBundlerTest(o), { model: "/models/model.gguf", prompt: PROMPT, maxTokens: MAX_TOKENS });
    for (const [engine, r] of Object.entries(out)) {
      check(r.ok, `${engine} engine: ${r.error}`);
      check(r.ids.length > 0 && r.completionTokens === r.ids.length, `${engine} engine generated no tokens: ${JSON.stringify(r)}`);
      reference.ids ??= r.ids;
      reference.from ??= `${name}/${engine}`;
      check(r.ids.join() === reference.ids.join(), `${name}/${engine} generated [${r.ids}], ${reference.from} [${reference.ids}]`);
      figures[engine] = `${r.ids.length} tokens in ${secs(r.ms)} s`;
    }
    const failed = server.requests.filter((q) => q.status >= 400 && q.path !== "/favicon.ico"); // the browser asks for one; the app has none
    check(failed.length === 0, `failed requests: ${failed.map((q) => `${q.method} ${q.path} → ${q.status}`).join(", ")}`);
    const wasmReqs = server.requests.filter((q) => q.path.endsWith(".wasm"));
    check(wasmReqs.length > 0 && wasmReqs.every((q) => wasmFiles.some((f) => q.path === `/${f}`)), `the .wasm was not loaded from the build's output: ${JSON.stringify(wasmReqs)}`);
    check(pageErrors.length === 0, `page errors: ${pageErrors.join(" | ")}`);
    figures.tokens = `[${reference.ids}]`;
    figures.requests = server.requests.length;
  } finally {
    await page.close().catch(() => {});
    await server.close();
  }
  return figures;
}

await step("prepack", stepPrepack);
for (const name of Object.keys(BUNDLERS)) await step(name, () => stepBundler(name));
await browser?.close();

const failed = results.filter((r) => !r.ok);
if (failed.length && consoleLines.length) console.log(`browser console (last 40 lines):\n${consoleLines.slice(-40).join("\n")}`);
if (KEEP) log(`kept ${tmp}`);
else fs.rmSync(tmp, { recursive: true, force: true });
log(`${results.length - failed.length}/${results.length} passed${failed.length ? `; failed: ${failed.map((r) => r.name).join(", ")}` : ""}`);
process.exit(failed.length ? 1 : 0);
