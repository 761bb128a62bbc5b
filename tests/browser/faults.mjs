// Network and cache faults, in headless Chromium (SwiftShader WebGPU) on the npm package (pkg/), with
// the tiny K-quant fixture (tests/fixtures/kquant/tiny-q4_k_m.gguf, 0.8 MB) as a GGUF and as a
// one-shard package. Every load that must succeed is checked by its greedy tokens against the CLI's.
// Builds nothing: needs pkg/wasm/ (bash scripts/build-pkg.sh) and target/debug/webgpu-llm.
//
//   node tests/browser/faults.mjs [--only name,name] [--keep] [--verbose]
//
// Scenarios (names for --only):
//   http-500     the manifest and a shard answer 500 (once, three times) → retried, loads; a Range
//                resume answered 500 twice → loads; a GGUF answering 500 for good → NETWORK naming
//                the URL and the status, after 4 requests
//   stall        the server stops sending for 30 s mid-body, then resumes: the load completes (no
//                timeout, one request), progress events keep coming (≥ 1/s), loadedBytes never goes
//                back, no "ready" before the end, the rate falls to 0 during the stall
//   changed      the GGUF changes between a first (cut) response and its Range resume: same-origin
//                If-Range → 200 → fetched from byte 0; a server that ignores If-Range → the 206's
//                other ETag is noticed → fetched from byte 0; cross-origin (CORS server, no If-Range
//                sent) → same; never a mix (request log; sha256 given; the cached copy reloads)
//   quota        the origin's quota (CDP Storage.overrideQuotaForOrigin) below the model: the estimate
//                says so → loads uncached, cacheWarning with needed/available (on modelInfo and the
//                progress events; also through the worker engine); the estimate says plenty →
//                the Cache API / OPFS write fails mid-download → loads uncached, cacheWarning
//   cache-damage cached parts cut short or with a flipped byte after they were stored (Cache API and
//                OPFS; GGUF and package) → detected (length / sha256), dropped, re-fetched, loads,
//                and the next load makes no request
//   cors         a model on another origin whose server sends no CORS headers → NETWORK, reason
//                "cors", the message names the headers to send, no retries; the same file from a
//                CORS-enabled origin loads; an unreachable port is not called CORS
//
// Prints one PASS/FAIL line per scenario with its figures; exits non-zero on any failure.
// Environment: CHROMIUM (default /usr/lib/chromium/chromium), WEBGPU_LLM_CLI (default
// target/debug/webgpu-llm), BROWSER_TEST_TMP (parent of the temp dir, default os.tmpdir()).

import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "./server.mjs";
import {
  CHROMIUM, H, KEEP, VERBOSE, check, eqArrays, errText, launch, log, openHarness, runScenarios, secs, t0, wantedScenarios,
} from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const CLI = process.env.WEBGPU_LLM_CLI ?? path.join(REPO, "target/debug/webgpu-llm");
const TINY = path.join(REPO, "tests/fixtures/kquant/tiny-q4_k_m.gguf");
const PROMPT = "the cat sat on the mat";
const N_TOKENS = 4;
const STALL_MS = 30_000;
const MIB = 1 << 20;


// ---------------------------------------------------------------------------------------------
// Setup

function runCli(args) {
  const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp/webgpu-llm-xdg" };
  fs.mkdirSync(env.XDG_RUNTIME_DIR, { recursive: true });
  const r = spawnSync(CLI, args, { env, encoding: "utf8", timeout: 120_000, maxBuffer: 16 * MIB });
  if (r.status !== 0) throw new Error(`${CLI} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

const openPage = (S, label) => openHarness(S, label, `${S.a.origin}/pages/faults.html`);
const Fx = (page, fn, ...args) => page.evaluate(([fn, args]) => window.F[fn](...args), [fn, args]);

/** Load; the scenario fails with the load's error if it fails. */
async function load(page, options, extra = {}) {
  const r = await H(page, "create", { options, ...extra });
  check(r.ok, `loading ${JSON.stringify(options.model)} failed: ${errText(r.error)}`);
  return r;
}

/** The engine's greedy tokens equal the CLI's; then it is unloaded. */
async function checkTokens(S, page, r, what) {
  const g = await H(page, "generate", r.id, PROMPT, { maxTokens: N_TOKENS, temperature: 0 });
  check(!g.error && eqArrays(g.ids, S.ref), `${what}: tokens ${JSON.stringify(g.ids)} ${errText(g.error)} (native ${JSON.stringify(S.ref)})`);
  await H(page, "unload", r.id);
}

const GGUF = "/m/gguf/tiny-q4_k_m.gguf";
const PKG = "/m/pkg/manifest.json";
const SHARD = "/m/pkg/shard-00000.bin";

function gets(server, p) {
  return server.requests((e) => e.path === p && e.method === "GET");
}
function modelRequests(server) {
  return server.requests((e) => e.path.startsWith("/m/"));
}
const fmtReqs = (rs) => rs.map((e) => `${e.method} ${e.range ?? "-"}${e.ifRange ? ` if-range ${e.ifRange}` : ""} → ${e.status}${e.cut !== undefined ? ` cut@${e.cut}` : ""}${e.changed ? " (changed)" : ""} sent ${e.sent ?? 0}`).join("; ");

// ---------------------------------------------------------------------------------------------
// Scenarios

async function scenarioHttp500(S, F) {
  const page = await openPage(S, "http-500");
  const A = S.a;
  // (a) the manifest once, the shard three times (MAX_RETRIES): retried with backoff, then loads.
  A.clearLog();
  A.status(PKG, { code: 500, times: 1 });
  A.status(SHARD, { code: 500, times: 3, onlyFull: true });
  const a = await load(page, { model: PKG, cache: false });
  A.clearFaults();
  const m = gets(A, PKG).map((e) => e.status);
  const sh = gets(A, SHARD).map((e) => e.status);
  check(eqArrays(m, [500, 200]), `manifest requests ${JSON.stringify(m)}`);
  check(eqArrays(sh, [500, 500, 500, 200]), `shard requests ${JSON.stringify(sh)}`);
  await checkTokens(S, page, a, "after 500s");
  F.retried = `manifest 500×1, shard 500×3 → loaded in ${secs(a.ms)} s`;

  // (b) a Range resume answered 500 twice: resumed on the third try.
  A.clearLog();
  A.cut(GGUF, { afterBytes: 300_000 });
  A.status(GGUF, { code: 500, times: 2, onlyRange: true });
  const b = await load(page, { model: GGUF, cache: false, sha256: S.ggufSha });
  A.clearFaults();
  const g = gets(A, GGUF);
  check(g.length === 4 && g[0].status === 200 && g[1].status === 500 && g[2].status === 500 && g[3].status === 206 && g[3].start > 0,
    `range resume requests: ${fmtReqs(g)}`);
  await checkTokens(S, page, b, "after a resume answered 500 twice");
  F.rangeResume = `cut@300000, 500, 500, ${g[3].range} → 206`;

  // (c) 500 for good: NETWORK naming the URL and the status, after 1 + 3 retries.
  A.clearLog();
  A.status(GGUF, { code: 500, times: Infinity });
  const c = await H(page, "create", { options: { model: GGUF, cache: false } });
  A.clearFaults();
  check(!c.ok && c.error.code === "NETWORK" && c.error.status === 500, `persistent 500 gave ${c.ok ? "success" : errText(c.error)} ${JSON.stringify(c.error)}`);
  check(c.error.message.includes(`${A.origin}${GGUF}`) && /HTTP 500/.test(c.error.message), `message lacks the URL or the status: ${c.error.message}`);
  const n = gets(A, GGUF).length;
  check(n === 4, `persistent 500: ${n} requests (expected 4)`);
  F.persistent = `${n} requests, ${secs(c.ms)} s: ${c.error.message}`;
  await page.close();
}

async function scenarioStall(S, F) {
  const page = await openPage(S, "stall");
  const A = S.a;
  await H(page, "clearStores");
  A.clearLog();
  const afterBytes = 300_000;
  A.stall(GGUF, { afterBytes, ms: STALL_MS });
  const r = await load(page, { model: GGUF }, { keepEvents: true });
  A.clearFaults();
  const g = gets(A, GGUF);
  check(g.length === 1 && g[0].stalled?.actualMs >= STALL_MS, `requests: ${fmtReqs(g)} stalled ${JSON.stringify(g[0]?.stalled)} (expected one, stalled ≥ ${STALL_MS} ms)`);
  check(r.ms >= STALL_MS, `the load took ${secs(r.ms)} s, less than the ${STALL_MS / 1000} s stall`);
  const ev = r.events;
  // loadedBytes never goes back, "ready" only last.
  for (let k = 1; k < ev.length; k++) {
    check(ev[k].loadedBytes >= ev[k - 1].loadedBytes, `loadedBytes went back at event ${k}: ${ev[k - 1].loadedBytes} → ${ev[k].loadedBytes}`);
  }
  const readyAt = ev.findIndex((e) => e.phase === "ready");
  check(readyAt === ev.length - 1, `"ready" at event ${readyAt} of ${ev.length}`);
  // The stall: events whose loadedBytes is what arrived before it, in download phase.
  const stalled = ev.filter((e) => e.phase === "download" && e.loadedBytes > 0 && e.loadedBytes <= afterBytes);
  const span = stalled.length ? stalled.at(-1).t - stalled[0].t : 0;
  if (VERBOSE) for (const e of ev) console.log(`  ${(e.t - ev[0].t).toFixed(0).padStart(6)} ms ${e.phase} ${e.loadedBytes}/${e.totalBytes} ${e.bytesPerSecond} B/s eta ${e.etaSeconds}`);
  check(span >= STALL_MS - 2000, `download events during the stall span only ${secs(span)} s`);
  let worstGap = 0;
  for (let k = 1; k < stalled.length; k++) worstGap = Math.max(worstGap, stalled[k].t - stalled[k - 1].t);
  check(stalled.length >= STALL_MS / 1000 - 2 && worstGap <= 1500, `${stalled.length} events during the stall, worst gap ${worstGap.toFixed(0)} ms (expected one a second)`);
  check(stalled.some((e) => e.bytesPerSecond === 0 && e.etaSeconds === undefined), "the rate never fell to 0 during the stall");
  check(ev.at(-1).loadedBytes === ev.at(-1).totalBytes, `last event ${JSON.stringify(ev.at(-1))}`);
  await checkTokens(S, page, r, "after the stall");
  F.stall = `${secs(g[0].stalled.actualMs)} s after ${afterBytes} bytes; load ${secs(r.ms)} s, 1 request`;
  F.progress = `${ev.length} events, ${stalled.length} during the stall (worst gap ${worstGap.toFixed(0)} ms, rate 0), loadedBytes monotonic, ready last`;
  await page.close();
}

async function scenarioChanged(S, F) {
  const page = await openPage(S, "changed");
  const A = S.a;
  const cutAt = 400_000;
  const flip = 350_000; // in the tensor data before the cut: a spliced file would carry it

  // (a) same-origin: the resume carries If-Range = the first response's ETag; the server has another
  //     version now and answers 200 with all of it; the shard starts again at byte 0.
  await H(page, "clearStores");
  A.clearLog();
  A.change(GGUF, { flip, times: 1 });
  A.cut(GGUF, { afterBytes: cutAt, delayMs: 1000 });
  // No sha256 given: the GGUF's bytes are checked only for size, so a spliced file would load and be
  // cached; what the cache holds is compared with the file instead.
  const a = await load(page, { model: GGUF });
  A.clearFaults();
  const ga = gets(A, GGUF);
  check(ga.length === 2 && ga[0].changed && ga[0].cut === cutAt, `(a) requests: ${fmtReqs(ga)}`);
  check(ga[1].range && ga[1].ifRange === ga[0].etag && ga[1].status === 200 && ga[1].sent === S.ggufBytes,
    `(a) the resume did not carry If-Range ${ga[0].etag} or was not answered with the whole new file: ${fmtReqs(ga)}`);
  await checkCachedCopy(S, page, GGUF, "(a)");
  await checkTokens(S, page, a, "(a) after a change detected by If-Range");
  // What was cached is the new version: the next load makes no request and gives the same tokens.
  A.clearLog();
  const a2 = await load(page, { model: GGUF });
  check(modelRequests(A).length === 0, `(a) reload made requests: ${fmtReqs(modelRequests(A))}`);
  await checkTokens(S, page, a2, "(a) reload from the cache");
  F.ifRange = fmtReqs(ga);

  // (b) a server that ignores If-Range: its 206 has the new version's ETag → back to byte 0.
  await H(page, "clearStores");
  A.clearLog();
  A.change(GGUF, { flip, times: 1 });
  A.cut(GGUF, { afterBytes: cutAt, delayMs: 1000 });
  A.ignoreIfRange(GGUF);
  const b = await load(page, { model: GGUF });
  A.clearFaults();
  const gb = gets(A, GGUF);
  check(gb.length === 3 && gb[1].status === 206 && !gb[2].range && gb[2].status === 200 && gb[2].sent === S.ggufBytes,
    `(b) requests: ${fmtReqs(gb)} (expected: cut, 206 of the other version dropped, whole file)`);
  await checkCachedCopy(S, page, GGUF, "(b)");
  await checkTokens(S, page, b, "(b) after a change seen in a 206's ETag");
  F.ignoredIfRange = fmtReqs(gb);

  // (c) cross-origin (a CORS server): no If-Range (it would need a preflight); the 206's ETag tells.
  const C = S.c;
  await H(page, "clearStores");
  C.clearLog();
  C.change(GGUF, { flip, times: 1 });
  C.cut(GGUF, { afterBytes: cutAt, delayMs: 1000 });
  const c = await load(page, { model: `${C.origin}${GGUF}` });
  C.clearFaults();
  const gc = gets(C, GGUF);
  check(gc.length === 3 && !gc[1].ifRange && gc[1].status === 206 && !gc[2].range && gc[2].status === 200,
    `(c) cross-origin requests: ${fmtReqs(gc)}`);
  check(C.requests((e) => e.method === "OPTIONS").length === 0, "(c) a preflight was sent");
  await checkCachedCopy(S, page, `${C.origin}${GGUF}`, "(c)");
  await checkTokens(S, page, c, "(c) cross-origin change");
  F.crossOrigin = fmtReqs(gc);
  await page.close();
}

/** The cached copy of the GGUF is the file on the server, byte for byte (not a splice of two versions). */
async function checkCachedCopy(S, page, url, label) {
  const got = await Fx(page, "partSha256", { store: "cache-api", url });
  check(got?.bytes === S.ggufBytes && got.sha256 === S.ggufSha, `${label} the cached copy is not the served file: ${JSON.stringify(got)} (want ${S.ggufSha})`);
}

async function scenarioQuota(S, F) {
  const page = await openPage(S, "quota");
  const A = S.a;
  await H(page, "clearStores");
  const cdp = await S.context.newCDPSession(page);
  const base = await Fx(page, "estimate");
  // The override makes writes fail (QuotaExceededError) but does not show in estimate() (Chromium 156):
  // (a) fakes the estimate as well, (b) keeps the real one (the estimate and the writes disagree).
  const room = 256 * 1024; // the model is 800 KiB
  await cdp.send("Storage.overrideQuotaForOrigin", { origin: A.origin, quotaSize: base.usage + room });
  try {
    // (a) the estimate says it cannot fit: caching given up before any write; the model loads.
    await Fx(page, "fakeEstimate", { usage: base.usage, quota: base.usage + room });
    A.clearLog();
    const a = await load(page, { model: GGUF }, { keepEvents: true });
    await Fx(page, "restoreEstimate");
    const w = a.modelInfo?.cacheWarning;
    check(w?.reason === "quota" && w.neededBytes === S.ggufBytes && w.availableBytes === room && w.store === "cache-api",
      `(a) modelInfo.cacheWarning ${JSON.stringify(w)}`);
    check(/needs 0\.8 MiB/.test(w.message) && /0\.3 MiB available/.test(w.message), `(a) warning message: ${w.message}`);
    check(a.events.some((e) => e.cacheWarning?.reason === "quota") && a.events.at(-1).cacheWarning, "(a) no progress event carries cacheWarning");
    check(a.events.at(-1).phase === "ready" && a.events.at(-1).fromCache === false, `(a) last event ${JSON.stringify(a.events.at(-1))}`);
    const cached = await H(page, "isModelCached", GGUF);
    check(cached.ok && cached.value === false, `(a) isModelCached ${JSON.stringify(cached)}`);
    check((await Fx(page, "record", { store: "cache-api", url: GGUF })) === null, "(a) a record was written although caching was given up");
    await checkTokens(S, page, a, "(a) loaded without caching");
    F.upfront = `${w.message.slice(0, 90)}… → loaded uncached in ${secs(a.ms)} s`;
    // The worker engine (its navigator.storage is not the page's faked one: its write is refused by the
    // real quota): the warning crosses to the page on modelInfo and on the progress events.
    const aw = await load(page, { model: GGUF }, { worker: true, keepEvents: true });
    const ww = aw.modelInfo?.cacheWarning;
    check(ww?.reason === "quota" && /QuotaExceededError/.test(ww.message) && ww.neededBytes === S.ggufBytes && aw.events.at(-1).cacheWarning?.reason === "quota",
      `(a worker) modelInfo.cacheWarning ${JSON.stringify(ww)}`);
    await checkTokens(S, page, aw, "(a worker) loaded without caching");

    // (b) the estimate says plenty: the Cache API / OPFS write itself fails mid-download.
    for (const store of ["cache-api", "opfs"]) {
      await H(page, "clearStores");
      A.clearLog();
      const b = await load(page, { model: GGUF, cache: store }, { keepEvents: true });
      const wb = b.modelInfo?.cacheWarning;
      check(wb?.reason === "quota" && wb.store === store && wb.neededBytes === S.ggufBytes && /QuotaExceededError/.test(wb.message),
        `(b ${store}) modelInfo.cacheWarning ${JSON.stringify(wb)} (console: ${JSON.stringify(await page.evaluate(() => window.F.warnings))})`);
      check(b.events.some((e) => e.cacheWarning), `(b ${store}) no progress event carries cacheWarning`);
      check(gets(A, GGUF).length === 1, `(b ${store}) requests: ${fmtReqs(gets(A, GGUF))}`);
      const c2 = await H(page, "isModelCached", GGUF, { cache: store });
      check(c2.ok && c2.value === false, `(b ${store}) isModelCached ${JSON.stringify(c2)}`);
      await checkTokens(S, page, b, `(b ${store}) loaded after a failed cache write`);
      F[`midWrite_${store}`] = `${wb.message.slice(0, 90)}… → loaded uncached in ${secs(b.ms)} s`;
    }
    await Fx(page, "restoreEstimate");
  } finally {
    await cdp.send("Storage.overrideQuotaForOrigin", { origin: A.origin }).catch(() => {});
  }
  // With the quota back, the same load caches again (nothing sticky).
  await H(page, "clearStores");
  const d = await load(page, { model: GGUF });
  check(!d.modelInfo?.cacheWarning, `cacheWarning without a quota problem: ${JSON.stringify(d.modelInfo?.cacheWarning)}`);
  await H(page, "unload", d.id);
  const cached = await H(page, "isModelCached", GGUF);
  check(cached.value === true, "quota restored: the model was not cached");
  await page.close();
}

async function scenarioCacheDamage(S, F) {
  const page = await openPage(S, "cache-damage");
  const A = S.a;
  const cases = [
    { store: "cache-api", model: GGUF, file: GGUF, mode: "truncate", keep: 500_000, sha: false },
    { store: "cache-api", model: PKG, file: SHARD, mode: "flip", at: 12_345 },
    { store: "opfs", model: PKG, file: SHARD, mode: "truncate", keep: 600_000 },
    { store: "opfs", model: GGUF, file: GGUF, mode: "flip", at: 700_000, sha: true },
  ];
  for (const k of cases) {
    const label = `${k.store} ${k.model === GGUF ? "GGUF" : "package"} ${k.mode}`;
    const options = { model: k.model, cache: k.store, ...(k.sha ? { sha256: S.ggufSha } : {}) };
    await H(page, "clearStores");
    const p = await load(page, options);
    await H(page, "unload", p.id);
    const d = await Fx(page, "damagePart", { store: k.store, url: k.file, part: 0, mode: k.mode, keep: k.keep, at: k.at });
    check(d.ok, `${label}: ${d.error}`);
    A.clearLog();
    const r = await load(page, options);
    const reqs = modelRequests(A);
    const g = gets(A, k.file);
    check(reqs.length === 1 && g.length === 1 && g[0].status === 200, `${label}: requests after the damage: ${fmtReqs(reqs)} (expected the damaged file once)`);
    await checkTokens(S, page, r, label);
    A.clearLog();
    const r2 = await load(page, options);
    check(modelRequests(A).length === 0, `${label}: the load after the re-fetch made requests: ${fmtReqs(modelRequests(A))}`);
    check((await Fx(page, "record", { store: k.store, url: k.file }))?.complete === true, `${label}: record not complete`);
    await checkTokens(S, page, r2, `${label} (reload)`);
    F[`${k.store}_${k.model === GGUF ? "gguf" : "pkg"}_${k.mode}`] = `${d.before}→${d.after} bytes${k.mode === "flip" ? ` (byte ${k.at} flipped)` : ""}: re-fetched once, right tokens, next load 0 requests`;
  }
  await page.close();
}

async function scenarioCors(S, F) {
  const page = await openPage(S, "cors");
  const B = S.b;
  // (a) another origin, no CORS headers.
  B.clearLog();
  const url = `${B.origin}${GGUF}`;
  const a = await H(page, "create", { options: { model: url } });
  check(!a.ok && a.error.code === "NETWORK" && a.error.reason === "cors", `no-CORS origin gave ${a.ok ? "success" : errText(a.error)} ${JSON.stringify(a.error)}`);
  const msg = a.error.message;
  for (const want of [url, "CORS", "Access-Control-Allow-Origin", S.a.origin, "Access-Control-Allow-Headers: Range", "Access-Control-Expose-Headers", "Content-Range", "ETag"]) {
    check(msg.includes(want), `CORS message lacks ${JSON.stringify(want)}: ${msg}`);
  }
  const bg = gets(B, GGUF);
  const probes = B.requests((e) => e.path === GGUF && e.method === "HEAD");
  check(bg.length === 1 && probes.length === 1, `no-CORS origin: ${fmtReqs(B.requests(() => true))} (expected one GET, no retry, one HEAD probe)`);
  check(a.ms < 5000, `the CORS error took ${secs(a.ms)} s`);
  F.cors = msg;
  // (b) the same file from an origin that sends CORS headers loads.
  const c = await load(page, { model: `${S.c.origin}${GGUF}`, cache: false });
  await checkTokens(S, page, c, "CORS-enabled origin");
  F.corsEnabled = `loaded from ${S.c.origin} in ${secs(c.ms)} s`;
  // (c) nothing listens: not called CORS (the probe gets no answer either).
  const d = await H(page, "create", { options: { model: "http://127.0.0.1:9/model.gguf", cache: false } });
  check(!d.ok && d.error.code === "NETWORK" && d.error.reason === "failed" && /unreachable/.test(d.error.message),
    `unreachable port gave ${d.ok ? "success" : errText(d.error)} ${JSON.stringify(d.error)}`);
  F.unreachable = d.error.message.slice(0, 120);
  await page.close();
}

const SCENARIOS = [
  ["http-500", scenarioHttp500],
  ["stall", scenarioStall],
  ["changed", scenarioChanged],
  ["quota", scenarioQuota],
  ["cache-damage", scenarioCacheDamage],
  ["cors", scenarioCors],
];

// ---------------------------------------------------------------------------------------------

async function main() {
  const problems = [];
  for (const [what, p] of [["pkg/wasm/webgpu_llm.js (bash scripts/build-pkg.sh)", "pkg/wasm/webgpu_llm.js"], ["the CLI (cargo build --bin webgpu-llm)", CLI], ["Chromium (bash scripts/setup.sh)", CHROMIUM], ["the fixture", TINY]]) {
    if (!fs.existsSync(path.resolve(REPO, p))) problems.push(`missing ${what}: ${p}`);
  }
  if (problems.length) {
    for (const p of problems) console.log(`FAIL setup: ${p}`);
    process.exit(2);
  }
  const wanted = wantedScenarios(SCENARIOS);

  const tmp = fs.mkdtempSync(path.join(process.env.BROWSER_TEST_TMP ?? os.tmpdir(), "webgpu-llm-faults-"));
  const S = { tmp };
  let results = [];
  try {
    const lines = runCli(["run", "--model", TINY, "--prompt", PROMPT, "--max-tokens", String(N_TOKENS), "--json"])
      .trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    S.ref = lines.filter((l) => "id" in l).map((l) => l.id);
    const pkgDir = path.join(tmp, "tiny-pkg");
    runCli(["convert", "--from", TINY, "--out", pkgDir, "--shard-mb", "1"]);
    const man = JSON.parse(fs.readFileSync(path.join(pkgDir, "manifest.json"), "utf8"));
    check(man.shards.length === 1 && man.shards[0].file === path.basename(SHARD), `package shards: ${JSON.stringify(man.shards.map((s) => s.file))}`);
    S.ggufBytes = fs.statSync(TINY).size;
    S.ggufSha = crypto.createHash("sha256").update(fs.readFileSync(TINY)).digest("hex");
    log(`setup: native tokens ${JSON.stringify(S.ref)}; package of 1 shard (${man.shards[0].bytes} bytes); GGUF ${S.ggufBytes} bytes`);
    const mounts = () => ({
      "/pkg/": path.join(REPO, "pkg"),
      "/pages/": path.join(HERE, "pages"),
      "/m/gguf/": path.dirname(TINY),
      "/m/pkg/": pkgDir,
    });
    // A: the pages and models (not cross-origin isolated, so the package's no-cors probe may reach
    // other origins); B: another origin without CORS headers; C: another origin with them.
    S.a = await startServer({ mounts: mounts(), quiet: !VERBOSE, isolation: false });
    S.b = await startServer({ mounts: mounts(), quiet: !VERBOSE, isolation: false });
    S.c = await startServer({ mounts: mounts(), quiet: !VERBOSE, isolation: false, cors: true });
    S.context = await launch(path.join(tmp, "profile"));
    log(`setup: servers ${S.a.origin} (pages), ${S.b.origin} (no CORS), ${S.c.origin} (CORS); Chromium ${S.context.browser()?.version() ?? ""}`);

    // A failed scenario's faults must not stay armed for the next one.
    results = await runScenarios(S, SCENARIOS, wanted, (S) => [S.a, S.b, S.c].forEach((s) => s.clearFaults()));
  } finally {
    await S.context?.close().catch(() => {});
    for (const s of [S.a, S.b, S.c]) await s?.close();
    if (KEEP) log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
  const passed = results.filter((r) => r.ok).length;
  console.log(`\n${passed}/${results.length} fault scenarios passed in ${secs(Date.now() - t0)} s`);
  process.exit(results.every((r) => r.ok) ? 0 : 1);
}


main().catch((e) => {
  console.log(`FAIL setup: ${e.stack ?? e}`);
  process.exit(2);
});
