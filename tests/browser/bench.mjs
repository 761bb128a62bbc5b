// The browser benchmark: the npm package's engine in headless Chromium (SwiftShader WebGPU here, the
// machine's GPU elsewhere) on a GGUF, greedy or sampled, printing the fields `webgpu-llm bench --json`
// prints natively (null where the engine under test does not report one). Builds nothing: run
// scripts/bench-browser.sh, or have a pkg/ with pkg/wasm/ built.
//
//   node tests/browser/bench.mjs [--model models/X.gguf] [--pkg pkg] [--prompt-tokens 32]
//        [--gen-tokens 16] [--temperature 0] [--top-p 1] [--top-k 0] [--seed S] [--json]
//        [--peer-dir node_modules/@wllama/wllama]
//
// --peer-dir: also run wllama (its npm package's directory) on the same GGUF and prompt, greedy, in
// the same browser, with 1 and 2 threads, and print its load/prefill/decode figures and our ratios.
//
// copy_gb_s is a plain vec4 copy kernel (64 MiB, read + write) written here in WGSL and timed in the
// same page, so roofline = decode_tok_s × weight_bytes_per_token / copy_gb_s compares like with like.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const num = (name, dflt) => {
  const v = opt(name, undefined);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}: not a number: ${v}`);
  return n;
};
const MODEL = path.resolve(opt("--model", path.join(REPO, "models/SmolLM2-135M-Instruct.Q4_1.gguf")));
const PKG = path.resolve(opt("--pkg", path.join(REPO, "pkg")));
const PEER = opt("--peer-dir") && path.resolve(opt("--peer-dir"));
const PROMPT_TOKENS = num("--prompt-tokens", 32);
const GEN_TOKENS = num("--gen-tokens", 16);
const JSON_OUT = argv.includes("--json");
const sampling = { temperature: num("--temperature", 0), topP: num("--top-p", 1), topK: num("--top-k", 0) };
if (opt("--seed") !== undefined) sampling.seed = num("--seed");
if (!fs.existsSync(MODEL)) throw new Error(`no model at ${MODEL} (bash scripts/fetch-model.sh)`);
if (!fs.existsSync(path.join(PKG, "wasm", "webgpu_llm_bg.wasm"))) throw new Error(`no ${PKG}/wasm (bash scripts/build-pkg.sh)`);
if (GEN_TOKENS < 4) throw new Error("--gen-tokens must be ≥ 4 (steady state is measured after the second token)");

const server = await startServer({
  mounts: { "/pkg/": PKG, "/pages/": path.join(HERE, "pages"), "/m/": path.dirname(MODEL), ...(PEER ? { "/peer/": PEER } : {}) },
});
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "webgpu-llm-bench-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/lib/chromium/chromium",
  headless: true,
  args: ["--no-sandbox", "--enable-unsafe-webgpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic"],
});
try {
  const page = await context.newPage();
  await page.goto(`${server.origin}/pages/index.html`);
  const ready = await page.evaluate(() => window.harnessReady);
  if (!ready.ok) throw new Error(`harness: ${JSON.stringify(ready.error)}`);
  const H = (fn, ...args) => page.evaluate(([fn, args]) => window.H[fn](...args), [fn, args]);
  const env = await H("env");
  const loaded = await H("create", { options: { model: `/m/${path.basename(MODEL)}` } });
  if (!loaded.ok) throw new Error(`load failed: ${JSON.stringify(loaded.error)}`);
  // A prompt of PROMPT_TOKENS tokens: plain words, cut to length by the engine's own tokenizer.
  const words = Array.from({ length: PROMPT_TOKENS * 2 }, (_, i) => ["the", "river", "runs", "past", "old", "stone", "walls"][i % 7]);
  const enc = await H("call", loaded.id, "encode", words.join(" "));
  const ids = (enc.value ?? []).slice(0, PROMPT_TOKENS);
  const dec = await H("call", loaded.id, "decode", ids);
  const g = await H("generate", loaded.id, dec.value, { maxTokens: GEN_TOKENS, ...sampling, stop: [] });
  if (g.error) throw new Error(`generate failed: ${JSON.stringify(g.error)}`);
  const copyGbs = await page.evaluate(copyBandwidth);
  const mem = await H("memory");
  const t = g.result?.timings ?? {};
  const st = g.result?.stats ?? {};
  const info = loaded.modelInfo ?? {};
  const decodeTokS = t.decodeTokensPerSecond ?? null;
  const perToken = info.weightBytesPerToken ?? null;
  const size = fs.statSync(MODEL).size;
  const report = {
    adapter: env.adapter ? `${env.adapter.vendor} ${env.adapter.architecture} (Chromium ${context.browser()?.version() ?? ""})`.trim() : null,
    model: path.relative(REPO, MODEL),
    weight_bytes: info.weightBytes ?? null,
    kernels: info.kernels ?? null,
    weight_bytes_per_token: perToken,
    load_s: loaded.ms / 1000,
    load_mb_s: size / 1e6 / (loaded.ms / 1000),
    ttft_ms: t.timeToFirstTokenMs ?? g.firstMs ?? null,
    prompt_tokens: g.result?.promptTokens ?? null,
    prefill_tok_s: t.prefillTokensPerSecond ?? null,
    gen_tokens: g.result?.completionTokens ?? g.ids.length,
    decode_tok_s: decodeTokS,
    temperature: sampling.temperature,
    dispatches: st.dispatches ?? null,
    submits: st.submits ?? null,
    buffers_created: st.buffersCreated ?? null,
    bind_groups_created: st.bindGroupsCreated ?? null,
    pipelines_created: st.pipelinesCreated ?? null,
    readback_bytes: st.readbackBytes ?? null,
    written_bytes: st.writtenBytes ?? null,
    encode_us: st.encodeUs ?? null,
    peak_gpu_bytes: st.peakGpuBytes ?? null,
    peak_wasm_bytes: mem.wasm ?? null,
    copy_gb_s: copyGbs,
    roofline: decodeTokS && perToken && copyGbs ? (decodeTokS * perToken) / 1e9 / copyGbs : null,
  };
  if (PEER) {
    const version = JSON.parse(fs.readFileSync(path.join(PEER, "package.json"), "utf8")).version;
    report.peer = [];
    for (const threads of [1, 2]) {
      const r = await page.evaluate(runWllama, { model: `/m/${path.basename(MODEL)}`, prompt: dec.value, gen: GEN_TOKENS, threads });
      report.peer.push({
        name: `wllama ${version}`, ...r,
        prefill_ratio: r.prefill_tok_s ? report.prefill_tok_s / r.prefill_tok_s : null,
        decode_ratio: r.decode_tok_s ? report.decode_tok_s / r.decode_tok_s : null,
      });
    }
  }
  if (JSON_OUT) {
    console.log(JSON.stringify(report));
  } else {
    for (const [k, v] of Object.entries(report)) {
      console.log(`${k.padEnd(24)} ${typeof v === "number" ? +v.toFixed(3) : typeof v === "object" ? JSON.stringify(v) : v}`);
    }
  }
} finally {
  await context.close();
  await server.close?.();
  fs.rmSync(profile, { recursive: true, force: true });
}

/** GB/s (read + write) of a plain 64 MiB vec4 copy kernel on the page's WebGPU device: best of 3 × 4. */
async function copyBandwidth() {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return null;
  const device = await adapter.requestDevice();
  const bytes = 64 << 20;
  const usage = GPUBufferUsage.STORAGE;
  const src = device.createBuffer({ size: bytes, usage });
  const dst = device.createBuffer({ size: bytes, usage });
  const module = device.createShaderModule({
    code: `@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<f32>>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  let i = g.x + g.y * n.x * 256u;
  if (i < arrayLength(&a)) { b[i] = a[i]; }
}`,
  });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer: src } }, { binding: 1, resource: { buffer: dst } }],
  });
  const groups = bytes / 16 / 256;
  const x = Math.min(groups, 65535);
  const run = async (n) => {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    for (let i = 0; i < n; i++) pass.dispatchWorkgroups(x, Math.ceil(groups / x));
    pass.end();
    const t0 = performance.now();
    device.queue.submit([enc.finish()]);
    await device.queue.onSubmittedWorkDone();
    return (performance.now() - t0) / 1000;
  };
  await run(1);
  let best = Infinity;
  for (let i = 0; i < 3; i++) best = Math.min(best, (await run(4)) / 4);
  device.destroy();
  return (2 * bytes) / best / 1e9;
}

/** wllama on the same model and prompt, greedy, `threads` threads: its load time, its own prefill and
 * decode timings (llama.cpp's), whether it could use WebGPU, and the text (to compare with ours). */
async function runWllama({ model, prompt, gen, threads }) {
  const { Wllama } = await import("/peer/esm/index.js");
  // Its log says which backend llama.cpp picked (WebGPU needs shader-f16, which SwiftShader lacks).
  const lines = [];
  const keep = (...a) => lines.push(a.map(String).join(" "));
  const logger = { debug: keep, log: keep, info: keep, warn: keep, error: keep };
  const w = new Wllama({ default: "/peer/esm/wasm/wllama.wasm" }, { logger });
  const t0 = performance.now();
  try {
    await w.loadModelFromUrl(new URL(model, location.href).href, { n_threads: threads, n_ctx: 512 });
  } catch (e) {
    return { threads, error: String(e?.message ?? e) };
  }
  const loadS = (performance.now() - t0) / 1000;
  const out = await w.createCompletion({ prompt, max_tokens: gen, temperature: 0 });
  const t = out.timings ?? {};
  const r = {
    threads,
    multithread: w.isMultithread(),
    webgpu_api: w.isSupportWebGPU(), // the API is there; not whether llama.cpp used it (it needs shader-f16)
    load_s: loadS,
    prompt_tokens: t.prompt_n ?? null,
    prefill_tok_s: t.prompt_per_second ?? null,
    gen_tokens: t.predicted_n ?? null,
    decode_tok_s: t.predicted_per_second ?? null,
    text: out.choices?.[0]?.text ?? null,
    backend_log: lines.filter((l) => /webgpu|backend|f16|offload/i.test(l)).slice(0, 6),
  };
  await w.exit();
  return r;
}
