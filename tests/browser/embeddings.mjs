// Embeddings through the npm package in headless Chromium (SwiftShader WebGPU): the real
// all-MiniLM-L6-v2 (scripts/fetch-embedder.sh), converted by the CLI to an f16 package, against
// sentence-transformers (tests/fixtures/minilm/expected.json, float32 on CPU; what tests/embed.rs
// checks natively): cosine ≥ 0.9999 (f16 weights; a wrong pooling, mask or norm gives < 0.99) and
// usage.prompt_tokens = the reference's token counts.
//
//   node tests/browser/embeddings.mjs [--only page,worker] [--keep] [--verbose]
//
// Scenarios:
//   page    createEngine: modelInfo (task "embed", dims, pooling, context = max_seq_length); every
//           short case in one request (OpenAI's shape, input order); each alone equals its row in the
//           batch (padding changes nothing); dimensions 64 (renormalised first 64 of the mean),
//           pooling "cls" with normalize false (the reference's raw [CLS] state); base64 decodes to
//           the float values; the 256-token case: INPUT_TOO_LONG (index, tokens, max) untruncated,
//           the reference's vector with truncate "end"; bad requests are BAD_REQUEST naming the
//           field (empty list, empty string, token ids, dimensions, encoding_format, unknown
//           field); generate on an embedding model is BAD_REQUEST; three requests at once queue and
//           all succeed; an aborted request rejects ABORTED and the next still works; after all the
//           errors, the batch again gives the same vectors
//   worker  createWorkerEngine: the batch gives the page's vectors (Float32Arrays cross the worker
//           boundary), an error is typed there too
//   gguf    the same model as a GGUF in llama.cpp's layout (models/all-MiniLM-L6-v2.f16.gguf, from
//           scripts/fetch-embedder.sh): modelInfo from its metadata (task "embed", pooling "mean" from
//           bert.pooling_type, context 512: a GGUF has the model's positions, not max_seq_length), the
//           batch against sentence-transformers, its WordPiece tokenizer's token counts, a typed error
//   decoder a decoder embedder: the tiny random Qwen3 fixture in Qwen3-Embedding's layout (`cargo run
//           --example write_fixture -- qwen3 DIR --embedding`, converted to f16; tests/embed_decoder.rs
//           checks it natively against transformers): modelInfo (qwen3, last-token pooling, 64 tokens),
//           the vectors the native CLI gives for the same package (`embed --json`; cosine ≥ 0.99999,
//           token counts equal), one input per GPU pass, INPUT_TOO_LONG past 64 tokens
//   nomic   the tiny random nomic-bert (tests/fixtures/encoders/nomic: rotary q|k in place, SwiGLU, no
//           biases; tests/encoder_hf.rs checks it natively), converted to f16, against transformers'
//           mean-pooled, normalised vectors (cosine ≥ 0.9999), its 86-token case past the trained 32
//
// Prints PASS/FAIL per scenario. Needs pkg/wasm (scripts/build-pkg.sh), the CLI (cargo build --bin
// webgpu-llm), models/all-MiniLM-L6-v2 and Chromium; scripts/test-browser.sh runs it. The package is
// cached in target/browser-models/minilm/ while its inputs are unchanged.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { MINILM, minilmPackage } from "./minilm.mjs";
import { startServer } from "./server.mjs";
import { CHROMIUM, KEEP, ONLY, VERBOSE, check, errText, launch, log, openHarness, runScenarios, secs, t0, wantedScenarios } from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const CLI = process.env.WEBGPU_LLM_CLI ?? path.join(REPO, "target/debug/webgpu-llm");
const EXPECTED = JSON.parse(fs.readFileSync(path.join(REPO, "tests/fixtures/minilm/expected.json"), "utf8"));
const MIN_COS = 0.9999;
/** Float32 batch vs one-at-a-time: the same kernels on the same rows, only reduction order may differ. */
const SAME = 1e-5;

const SHORT = EXPECTED.cases.filter((c) => c.ids.length < EXPECTED.max_seq_length);
const LONG = EXPECTED.cases.find((c) => c.ids.length === EXPECTED.max_seq_length);

// ---------------------------------------------------------------------------------------------
// Checks

const M = (page, fn, ...args) => page.evaluate(([fn, args]) => window.M[fn](...args), [fn, args]);

function cosine(a, b) {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb);
}
const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

async function open(S, worker) {
  const label = worker ? "minilm-worker" : "minilm";
  const page = await openHarness(S, label, `${S.server.origin}/pages/models.html`, { workers: worker });
  const r = await M(page, "create", { worker, options: { model: "/m/minilm/manifest.json", cache: false } });
  check(r.ok, `loading MiniLM (${worker ? "worker" : "page"}) failed: ${errText(r.error)}`);
  return { page, id: r.id, loadMs: r.ms, info: r.modelInfo };
}

async function embed(E, request, what) {
  const r = await M(E.page, "embed", E.id, request);
  check(r.ok, `${what}: ${errText(r.error)}`);
  return r.response;
}

async function expectError(E, request, code, what, fields = {}) {
  const r = await M(E.page, "embed", E.id, request);
  check(!r.ok, `${what}: expected ${code}, got a response`);
  check(r.error.code === code, `${what}: expected ${code}, got ${errText(r.error)}`);
  for (const [k, v] of Object.entries(fields)) check(r.error[k] === v, `${what}: error.${k} = ${JSON.stringify(r.error[k])}, expected ${JSON.stringify(v)}`);
  return r.error;
}

/** The short cases in one request: OpenAI's shape, input order, the reference's vectors. */
async function checkBatch(E, what) {
  const res = await embed(E, { input: SHORT.map((c) => c.text) }, what);
  check(res.object === "list" && res.data.length === SHORT.length, `${what}: ${res.object} with ${res.data?.length} items`);
  let worst = 1;
  res.data.forEach((d, i) => {
    check(d.object === "embedding" && d.index === i && d.embedding.length === EXPECTED.dims, `${what}: item ${i} is ${JSON.stringify({ ...d, embedding: d.embedding.length })}`);
    const cos = cosine(d.embedding, SHORT[i].embedding);
    worst = Math.min(worst, cos);
    check(cos >= MIN_COS, `${what}: ${JSON.stringify(SHORT[i].text)}: cosine ${cos} with sentence-transformers`);
    check(Math.abs(norm(d.embedding) - 1) < 1e-5, `${what}: |v| = ${norm(d.embedding)}`);
  });
  const tokens = SHORT.reduce((s, c) => s + c.ids.length, 0);
  check(res.usage.prompt_tokens === tokens && res.usage.total_tokens === tokens, `${what}: usage ${JSON.stringify(res.usage)}, the reference's ids count ${tokens}`);
  return { res, worst };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async function scenarioPage(S, F) {
  const E = await open(S, false);
  F.load_s = secs(E.loadMs);
  const i = E.info;
  check(i.task === "embed" && i.dims === EXPECTED.dims && i.pooling === "mean" && i.normalize === true && i.context === EXPECTED.max_seq_length,
    `modelInfo ${JSON.stringify(i)}`);
  const { res: batch, worst } = await checkBatch(E, "batch");
  F.one_minus_min_cosine = (1 - worst).toExponential(1);
  F.batch_ms = batch.timings.total_ms.toFixed(0);
  F.passes = batch.timings.gpu_passes;

  // One at a time equals the batch rows (padding and batch mates change nothing).
  for (const k of [0, 3, 5]) {
    const one = await embed(E, { input: SHORT[k].text }, `alone ${k}`);
    const d = maxDiff(one.data[0].embedding, batch.data[k].embedding);
    check(d < SAME, `${JSON.stringify(SHORT[k].text)}: alone vs in the batch differ by ${d}`);
  }

  // Matryoshka cut, pooling/normalize overrides, base64.
  const cut = await embed(E, { input: SHORT[1].text, dimensions: 64 }, "dimensions 64");
  const mean = SHORT[1].mean;
  check(cut.data[0].embedding.length === 64 && cosine(cut.data[0].embedding, mean.slice(0, 64)) >= MIN_COS && Math.abs(norm(cut.data[0].embedding) - 1) < 1e-5,
    `dimensions 64: ${cut.data[0].embedding.length} values, cosine ${cosine(cut.data[0].embedding, mean.slice(0, 64))} with the first 64 of the mean`);
  const cls = await embed(E, { input: SHORT[1].text, pooling: "cls", normalize: false }, "pooling cls");
  const cc = cosine(cls.data[0].embedding, SHORT[1].cls);
  const ratio = norm(cls.data[0].embedding) / norm(SHORT[1].cls);
  check(cc >= MIN_COS && Math.abs(ratio - 1) < 1e-3, `pooling cls, not normalised: cosine ${cc}, length ratio ${ratio}`);
  const b64 = await embed(E, { input: SHORT[2].text, encoding_format: "base64" }, "base64");
  const buf = Buffer.from(b64.data[0].embedding, "base64");
  const floats = Array.from({ length: buf.length / 4 }, (_, k) => buf.readFloatLE(4 * k));
  check(floats.length === EXPECTED.dims && maxDiff(floats, batch.data[2].embedding) < SAME, `base64: ${floats.length} floats, differ from the float encoding by ${maxDiff(floats, batch.data[2].embedding)}`);

  // The 256-token case: too long as is, the reference's vector when cut at the end.
  const long = await expectError(E, { input: ["short", LONG.text] }, "INPUT_TOO_LONG", "untruncated long input", { index: 1, max: EXPECTED.max_seq_length });
  check(long.tokens > EXPECTED.max_seq_length, `INPUT_TOO_LONG: tokens ${long.tokens}`);
  const cutLong = await embed(E, { input: LONG.text, truncate: "end" }, "truncate end");
  const lc = cosine(cutLong.data[0].embedding, LONG.embedding);
  check(lc >= MIN_COS && cutLong.usage.prompt_tokens === EXPECTED.max_seq_length, `truncate "end": cosine ${lc}, ${cutLong.usage.prompt_tokens} tokens`);
  F.long_one_minus_cosine = (1 - lc).toExponential(1);

  // Bad requests name their field; the engine stays usable.
  await expectError(E, { input: [] }, "BAD_REQUEST", "empty list", { option: "input" });
  await expectError(E, { input: ["fine", ""] }, "BAD_REQUEST", "empty string", { option: "input" });
  await expectError(E, { input: [[101, 102]] }, "BAD_REQUEST", "token ids", { option: "input" });
  await expectError(E, { input: "x", dimensions: 0 }, "BAD_REQUEST", "dimensions 0", { option: "dimensions" });
  await expectError(E, { input: "x", dimensions: EXPECTED.dims + 1 }, "BAD_REQUEST", "dimensions over the width", { option: "dimensions" });
  await expectError(E, { input: "x", encoding_format: "int8" }, "BAD_REQUEST", "encoding_format", { option: "encoding_format" });
  await expectError(E, { input: "x", truncate: true }, "BAD_REQUEST", "truncate", { option: "truncate" });
  await expectError(E, { input: "x", frobnicate: 1 }, "BAD_REQUEST", "unknown field", { option: "frobnicate" });
  const g = await M(E.page, "generate", E.id, "hello", { maxTokens: 2 });
  check(g.error?.code === "BAD_REQUEST" && /embeddings\.create/.test(g.error.message), `generate on an embedding model: ${errText(g.error)}`);
  F.errors = 10;

  // Requests at once queue; an aborted one rejects and the next works.
  const many = await M(E.page, "embedConcurrently", E.id, [0, 1, 2].map((k) => ({ input: SHORT[k].text })));
  many.forEach((r, k) => {
    check(r.ok, `concurrent request ${k}: ${errText(r.error)}`);
    check(maxDiff(r.response.data[0].embedding, batch.data[k].embedding) < SAME, `concurrent request ${k}: not the batch's vector`);
  });
  const ab = await M(E.page, "embedAborted", E.id, { input: SHORT[0].text }, { input: SHORT[1].text });
  check(ab.first.ok && ab.second.error?.code === "ABORTED", `abort while queued: first ${JSON.stringify(ab.first)}, second ${errText(ab.second.error)}`);

  const again = await checkBatch(E, "batch after errors");
  again.res.data.forEach((d, k) => check(maxDiff(d.embedding, batch.data[k].embedding) < SAME, `batch after errors: item ${k} changed`));
  S.pageBatch = batch;
  await M(E.page, "unload", E.id);
  await E.page.close();
}

async function scenarioWorker(S, F) {
  const E = await open(S, true);
  F.load_s = secs(E.loadMs);
  check(E.info.task === "embed", `worker modelInfo.task ${E.info.task}`);
  const { res, worst } = await checkBatch(E, "worker batch");
  F.one_minus_min_cosine = (1 - worst).toExponential(1);
  if (S.pageBatch) res.data.forEach((d, k) => check(maxDiff(d.embedding, S.pageBatch.data[k].embedding) < SAME, `worker: item ${k} differs from the page's`));
  await expectError(E, { input: ["ok", ""] }, "BAD_REQUEST", "worker empty string", { option: "input" });
  await M(E.page, "unload", E.id);
  await E.page.close();
}

async function scenarioGguf(S, F) {
  const page = await openHarness(S, "minilm-gguf", `${S.server.origin}/pages/models.html`);
  const r = await M(page, "create", { options: { model: "/g/all-MiniLM-L6-v2.f16.gguf", cache: false } });
  check(r.ok, `loading the GGUF failed: ${errText(r.error)}`);
  const E = { page, id: r.id, info: r.modelInfo };
  F.load_s = secs(r.ms);
  const i = E.info;
  check(i.task === "embed" && i.architecture === "bert" && i.dims === EXPECTED.dims && i.pooling === "mean" && i.normalize === true && i.context === 512,
    `GGUF modelInfo ${JSON.stringify(i)}`);
  const { worst } = await checkBatch(E, "gguf batch");
  F.one_minus_min_cosine = (1 - worst).toExponential(1);
  await expectError(E, { input: [""] }, "BAD_REQUEST", "gguf empty string", { option: "input" });
  await M(page, "unload", E.id);
  await page.close();
}

const DECODER_TEXTS = ["The capital of France is", "1, 2, 3, 4, 5, 6, 7", "A longer sentence, so that the inputs differ in length."];

function run(cmd, args, what) {
  const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp/webgpu-llm-xdg" };
  const r = spawnSync(cmd, args, { cwd: REPO, env, encoding: "utf8", timeout: 900_000, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${what}: ${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** The Qwen3 fixture in Qwen3-Embedding's layout as an f16 package (rebuilt each run: ~10 s). */
function decoderPackage(tmp) {
  const hf = path.join(tmp, "qwen3-embedding-hf");
  const pkgDir = path.join(tmp, "qwen3-embedding");
  run("cargo", ["run", "--quiet", "--example", "write_fixture", "--", "qwen3", hf, "--embedding"], "the Qwen3-Embedding fixture");
  run(CLI, ["convert", "--from", hf, "--out", pkgDir, "--quant", "f16"], "convert");
  const args = ["embed", "--model", pkgDir, "--json", ...DECODER_TEXTS.flatMap((t) => ["--text", t])];
  return { pkgDir, native: JSON.parse(run(CLI, args, "native embed")) };
}

async function scenarioDecoder(S, F) {
  const page = await openHarness(S, "qwen3-embedding", `${S.server.origin}/pages/models.html`);
  const r = await M(page, "create", { options: { model: "/m/qwen3-embedding/manifest.json", cache: false } });
  check(r.ok, `loading the decoder embedder failed: ${errText(r.error)}`);
  const E = { page, id: r.id, info: r.modelInfo };
  F.load_s = secs(r.ms);
  const i = E.info;
  check(i.task === "embed" && i.architecture === "qwen3" && i.pooling === "last" && i.normalize === true && i.context === 64 && i.dims === 96,
    `decoder modelInfo ${JSON.stringify(i)}`);
  const res = await embed(E, { input: DECODER_TEXTS }, "decoder batch");
  const native = S.decoderNative;
  let worst = 1;
  res.data.forEach((d, k) => {
    const cos = cosine(d.embedding, native.embeddings[k]);
    worst = Math.min(worst, cos);
    check(cos >= 0.99999, `decoder ${JSON.stringify(DECODER_TEXTS[k])}: cosine ${cos} with the native CLI's vector`);
  });
  const tokens = native.ids.reduce((s, ids) => s + ids.length, 0);
  check(res.usage.prompt_tokens === tokens && res.timings.gpu_passes === DECODER_TEXTS.length,
    `decoder: usage ${JSON.stringify(res.usage)} (native ${tokens} tokens), ${res.timings.gpu_passes} passes`);
  F.one_minus_min_cosine = (1 - worst).toExponential(1);
  await expectError(E, { input: ["fine", "word ".repeat(100)] }, "INPUT_TOO_LONG", "decoder too long", { index: 1, max: 64 });
  await M(page, "unload", E.id);
  await page.close();
}

/** The tiny nomic-bert fixture as an f16 package, and its expected.json. */
function nomicPackage(tmp) {
  const hf = path.join(tmp, "nomic-hf");
  const pkgDir = path.join(tmp, "nomic");
  run("cargo", ["run", "--quiet", "--example", "write_fixture", "--", "encoders/nomic", hf], "the nomic-bert fixture");
  run(CLI, ["convert", "--from", hf, "--out", pkgDir, "--quant", "f16"], "convert");
  const expected = JSON.parse(fs.readFileSync(path.join(REPO, "tests/fixtures/encoders/nomic/expected.json"), "utf8"));
  return { pkgDir, expected };
}

async function scenarioNomic(S, F) {
  const page = await openHarness(S, "nomic", `${S.server.origin}/pages/models.html`);
  const r = await M(page, "create", { options: { model: "/m/nomic/manifest.json", cache: false } });
  check(r.ok, `loading nomic-bert failed: ${errText(r.error)}`);
  const E = { page, id: r.id, info: r.modelInfo };
  F.load_s = secs(r.ms);
  check(E.info.task === "embed" && E.info.architecture === "nomic_bert" && E.info.pooling === "mean", `nomic modelInfo ${JSON.stringify(E.info)}`);
  const cases = S.nomic.cases;
  const res = await embed(E, { input: cases.map((c) => c.text) }, "nomic batch");
  let worst = 1;
  res.data.forEach((d, k) => {
    const cos = cosine(d.embedding, cases[k].embedding);
    worst = Math.min(worst, cos);
    check(cos >= MIN_COS, `nomic ${JSON.stringify(cases[k].text.slice(0, 30))} (${cases[k].ids.length} tokens): cosine ${cos} with transformers`);
  });
  const tokens = cases.reduce((s, c) => s + c.ids.length, 0);
  check(res.usage.prompt_tokens === tokens, `nomic: usage ${JSON.stringify(res.usage)}, transformers' ids ${tokens}`);
  F.one_minus_min_cosine = (1 - worst).toExponential(1);
  F.longest = Math.max(...cases.map((c) => c.ids.length));
  await M(page, "unload", E.id);
  await page.close();
}

const SCENARIOS = [
  ["page", scenarioPage],
  ["worker", scenarioWorker],
  ["gguf", scenarioGguf],
  ["decoder", scenarioDecoder],
  ["nomic", scenarioNomic],
];

async function main() {
  const problems = [];
  for (const [what, p] of [["pkg/wasm/webgpu_llm.js (bash scripts/build-pkg.sh)", "pkg/wasm/webgpu_llm.js"], ["the CLI (cargo build --bin webgpu-llm)", CLI], ["all-MiniLM-L6-v2 (bash scripts/fetch-embedder.sh)", path.join(MINILM, "model.safetensors")], ["its GGUF (bash scripts/fetch-embedder.sh)", path.join(REPO, "models/all-MiniLM-L6-v2.f16.gguf")], ["Chromium (bash scripts/setup.sh)", CHROMIUM]]) {
    if (!fs.existsSync(path.resolve(REPO, p))) problems.push(`missing ${what}: ${p}`);
  }
  if (problems.length) {
    for (const p of problems) console.log(`FAIL setup: ${p}`);
    process.exit(2);
  }
  const wanted = ONLY ? wantedScenarios(SCENARIOS) : SCENARIOS.map(([n]) => n);
  const tmp = fs.mkdtempSync(path.join(process.env.BROWSER_TEST_TMP ?? os.tmpdir(), "webgpu-llm-embed-"));
  const S = { tmp };
  let results = [];
  try {
    const p = minilmPackage(CLI);
    log(`setup: MiniLM f16 package ${path.relative(REPO, p.pkgDir)} ${p.cached ? "(cached)" : `(converted in ${p.seconds.toFixed(1)} s)`}`);
    const mounts = { "/pkg/": path.join(REPO, "pkg"), "/pages/": path.join(HERE, "pages"), "/m/minilm/": p.pkgDir, "/g/": path.join(REPO, "models") };
    if (wanted.includes("decoder")) {
      const d = decoderPackage(tmp);
      S.decoderNative = d.native;
      mounts["/m/qwen3-embedding/"] = d.pkgDir;
      log(`setup: the Qwen3-Embedding-layout fixture converted, native vectors for ${d.native.embeddings.length} texts`);
    }
    if (wanted.includes("nomic")) {
      const n = nomicPackage(tmp);
      S.nomic = n.expected;
      mounts["/m/nomic/"] = n.pkgDir;
    }
    S.server = await startServer({ mounts, quiet: !VERBOSE });
    S.context = await launch(path.join(tmp, "profile"));
    results = await runScenarios(S, SCENARIOS, wanted);
  } finally {
    await S.context?.close().catch(() => {});
    await S.server?.close();
    if (KEEP) log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
  const passed = results.filter((r) => r.ok).length;
  console.log(`\n${passed}/${results.length} scenarios passed in ${secs(Date.now() - t0)} s`);
  process.exit(results.every((r) => r.ok) ? 0 : 1);
}

main().catch((e) => {
  console.log(`FAIL setup: ${e.stack ?? e}`);
  process.exit(2);
});
