// Test harness page: imports the npm package exactly as a web developer would (pkg/index.js) and exposes
// small async helpers on `window.H` that tests/browser/run.mjs calls with page.evaluate. Every helper
// returns plain JSON (errors as {code, name, message, ...details}), so the runner does all asserting.

const PKG = "/pkg/index.js";
const GLUE = "/pkg/wasm/webgpu_llm.js"; // the module pkg/src/wasm.js imports: same URL, same instance

let pkg;
const engines = new Map();
let nextId = 1;

// Every GPUDevice this page makes, so a test can lose them (`loseDevices`) as a driver reset would.
const devices = [];
if (globalThis.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    const d = await requestDevice.apply(this, args);
    devices.push(d);
    return d;
  };
}

function errJson(e) {
  if (!e || typeof e !== "object") return { code: "THROWN_NON_ERROR", message: String(e) };
  const out = { name: e.name, ctor: e.constructor?.name, code: e.code, message: e.message, isError: e instanceof Error };
  if (pkg?.WebGpuLlmError) out.isWebGpuLlmError = e instanceof pkg.WebGpuLlmError;
  for (const k of Object.keys(e)) {
    if (["code", "message", "name", "stack", "cause"].includes(k)) continue;
    try {
      out[k] = JSON.parse(JSON.stringify(e[k]));
    } catch {
      out[k] = String(e[k]);
    }
  }
  if (e.cause) out.cause = String(e.cause?.message ?? e.cause);
  return out;
}

/** The wasm module's linear memory size (bytes), or null before the module is instantiated here. */
async function wasmMemoryBytes() {
  // The package's hook (pkg/index.js `wasmMemoryBytes()`, 0 until the package initialised the module).
  if (typeof pkg?.wasmMemoryBytes === "function") {
    const v = await pkg.wasmMemoryBytes();
    if (typeof v === "number" && v > 0) return v;
  }
  // wasm-bindgen's `--target web` init() returns the instance's exports once initialised (and
  // returns early when it already is), so calling it again yields `memory` without a second instance.
  if (!H._wasmInitDone) return null;
  const glue = await import(GLUE);
  const exportsObj = await glue.default();
  return exportsObj?.memory?.buffer?.byteLength ?? null;
}

function jsHeap() {
  const m = performance.memory;
  return m ? { used: m.usedJSHeapSize, total: m.totalJSHeapSize, limit: m.jsHeapSizeLimit } : null;
}

function summarizeProgress(events) {
  const phases = [];
  for (const e of events) {
    const last = phases[phases.length - 1];
    if (!last || last.phase !== e.phase) phases.push({ phase: e.phase, count: 1, first: e, last: e });
    else (last.count++, (last.last = e));
  }
  const fields = ["phase", "loadedBytes", "totalBytes", "bytesPerSecond", "etaSeconds", "shard", "shardCount", "fromCache"];
  const missing = new Set();
  for (const e of events) for (const f of fields) if (!(f in e)) missing.add(f);
  const maxRate = Math.max(0, ...events.map((e) => e.bytesPerSecond || 0));
  const monotonicTotal = events.every((e, i) => i === 0 || e.totalBytes >= 0);
  return {
    count: events.length,
    missingFields: [...missing],
    phases: phases.map((p) => ({ phase: p.phase, count: p.count, first: p.first, last: p.last })),
    last: events[events.length - 1],
    maxBytesPerSecond: maxRate,
    monotonicTotal,
  };
}

const H = {
  _wasmInitDone: false,

  async ready() {
    pkg = await import(PKG);
    return { exports: Object.keys(pkg).sort() };
  },

  async env() {
    const adapter = await navigator.gpu?.requestAdapter();
    return {
      gpu: !!navigator.gpu,
      adapter: adapter ? { ...(adapter.info ? { architecture: adapter.info.architecture, vendor: adapter.info.vendor } : {}), fallback: adapter.isFallbackAdapter } : null,
      crossOriginIsolated: globalThis.crossOriginIsolated,
      performanceMemory: !!performance.memory,
      userAgent: navigator.userAgent,
    };
  },

  /** Instantiate the wasm module now (as the package would), so its memory can be read before a load. */
  async initWasm() {
    const glue = await import(GLUE);
    const ex = await glue.default({ module_or_path: new URL("/pkg/wasm/webgpu_llm_bg.wasm", location.href) });
    H._wasmInitDone = true;
    return ex.memory.buffer.byteLength;
  },

  async memory() {
    return { wasm: await wasmMemoryBytes(), js: jsHeap(), t: performance.now() };
  },

  /** The wasm memory of an engine's module (a worker engine's lives in its worker). */
  async engineWasmMemory(id) {
    const e = engines.get(id);
    return typeof e?.wasmMemoryBytes === "function" ? await e.wasmMemoryBytes() : null;
  },

  /** Full GC (Chromium started with --js-flags=--expose-gc), then the figures. */
  async memoryAfterGc() {
    if (typeof gc === "function") {
      gc();
      await new Promise((r) => setTimeout(r, 50));
      gc();
    }
    return { ...(await H.memory()), gcDone: typeof gc === "function" };
  },

  /** Delete the package's caches (Cache API and OPFS), whatever their names. */
  async clearStores() {
    const out = { caches: [], opfs: [] };
    for (const k of await caches.keys()) {
      await caches.delete(k);
      out.caches.push(k);
    }
    const root = await navigator.storage.getDirectory();
    for await (const [name] of root.entries()) {
      await root.removeEntry(name, { recursive: true });
      out.opfs.push(name);
    }
    return out;
  },

  /** What the stores hold: Cache API entry URLs per cache, OPFS names (recursive). */
  async storeContents() {
    const out = { caches: {}, opfs: [] };
    for (const k of await caches.keys()) {
      const c = await caches.open(k);
      out.caches[k] = (await c.keys()).map((r) => r.url);
    }
    const walk = async (dir, prefix) => {
      for await (const [name, h] of dir.entries()) {
        if (h.kind === "directory") await walk(h, `${prefix}${name}/`);
        else out.opfs.push(`${prefix}${name}`);
      }
    };
    await walk(await navigator.storage.getDirectory(), "");
    return out;
  },

  /**
   * createEngine / createWorkerEngine. `opts.sampleMemory`: sample wasm memory and JS heap every 25 ms
   * and at every progress event while loading.
   */
  async create({ worker = false, options = {}, sampleMemory = false, keepEvents = false }) {
    const events = [];
    const samples = [];
    let timer;
    const sample = async () => samples.push(await H.memory());
    if (sampleMemory) {
      await sample();
      timer = setInterval(sample, 25);
    }
    const onProgress = (e) => {
      events.push({ ...e, t: performance.now() });
      if (sampleMemory) {
        // synchronous reading of the current figures (no await inside a progress callback)
        const js = jsHeap();
        samples.push({ wasm: H._memNow?.(), js, t: performance.now(), progress: e.loadedBytes, phase: e.phase });
      }
    };
    const t0 = performance.now();
    try {
      const create = worker ? pkg.createWorkerEngine : pkg.createEngine;
      const engine = await create({ ...options, onProgress });
      const ms = performance.now() - t0;
      const id = nextId++;
      engines.set(id, engine);
      if (timer) clearInterval(timer);
      if (sampleMemory) await sample();
      return {
        ok: true, id, ms,
        modelInfo: engine.modelInfo, gpuInfo: engine.gpuInfo, modelId: engine.modelId, modelFormat: engine.modelFormat,
        progress: summarizeProgress(events), events: keepEvents ? events : undefined, samples: sampleMemory ? samples : undefined,
      };
    } catch (e) {
      if (timer) clearInterval(timer);
      return { ok: false, ms: performance.now() - t0, error: errJson(e), progress: summarizeProgress(events), events: keepEvents ? events : undefined, samples: sampleMemory ? samples : undefined };
    }
  },

  /**
   * Run engine.generate and collect the chunks. `abortAfter`: call engine.abort() after that many chunks.
   * `overlapAfter`: after that many chunks, start a second generate() and record what it gives.
   */
  async generate(id, prompt, options = {}, { abortAfter, overlapAfter, overlapPrompt = "Hi" } = {}) {
    const engine = engines.get(id);
    const t0 = performance.now();
    const chunks = [];
    let tFirst, overlap, error, result, resultError;
    const stream = engine.generate(prompt, options);
    try {
      for await (const c of stream) {
        const t = performance.now();
        tFirst ??= t;
        chunks.push({ text: c.text, tokenId: c.tokenId, keys: Object.keys(c), t: t - t0 });
        if (overlapAfter !== undefined && chunks.length === overlapAfter && !overlap) {
          overlap = { busyFlag: engine.busy };
          try {
            const s2 = engine.generate(overlapPrompt, { maxTokens: 2 });
            const got = [];
            for await (const c2 of s2) got.push(c2.text);
            overlap.chunks = got;
          } catch (e) {
            overlap.error = errJson(e);
          }
        }
        if (abortAfter !== undefined && chunks.length === abortAfter) engine.abort();
      }
    } catch (e) {
      error = errJson(e);
    }
    const tEnd = performance.now();
    try {
      result = stream.result ? await stream.result : undefined;
    } catch (e) {
      resultError = errJson(e);
    }
    const n = chunks.length;
    return {
      chunks, error, result, resultError, overlap, busyAfter: engine.busy,
      text: chunks.map((c) => c.text).join(""),
      ids: chunks.map((c) => c.tokenId),
      totalMs: tEnd - t0,
      firstMs: tFirst !== undefined ? tFirst - t0 : undefined,
      // decode rate measured here: tokens after the first over the time after the first
      decodeTokPerSec: n > 1 ? ((n - 1) * 1000) / (chunks[n - 1].t - chunks[0].t) : undefined,
    };
  },

  /**
   * The API input matrix on one engine: each bad request's error (from the stream's result and from
   * create()), with `busy` after it; abort() when idle; then `prompt` for `maxTokens` greedy tokens.
   */
  async inputMatrix(id, prompt, maxTokens) {
    const engine = engines.get(id);
    const vocab = engine.modelInfo.vocab;
    const settle = async (stream) => {
      try {
        for await (const _ of stream) {
          // drain
        }
        return { ok: true, result: await stream.result };
      } catch (e) {
        return { ok: false, error: errJson(e) };
      }
    };
    const gen = (p, o) => settle(engine.generate(p, o));
    const chat = async (request) => {
      try {
        return { ok: true, response: await engine.chat.completions.create(request) };
      } catch (e) {
        return { ok: false, error: errJson(e) };
      }
    };
    const cases = {
      "empty text": () => gen("", { maxTokens: 2 }),
      "empty ids": () => gen([], { maxTokens: 2 }),
      "id = vocab": () => gen([1, vocab], { maxTokens: 2 }),
      "id -1": () => gen([1, -1], { maxTokens: 2 }),
      "id 1.5": () => gen([1, 1.5], { maxTokens: 2 }),
      "maxTokens 0": () => gen(prompt, { maxTokens: 0 }),
      "maxTokens 2.5": () => gen(prompt, { maxTokens: 2.5 }),
      "temperature NaN": () => gen(prompt, { maxTokens: 2, temperature: NaN }),
      "temperature -1": () => gen(prompt, { maxTokens: 2, temperature: -1 }),
      "topP 0": () => gen(prompt, { maxTokens: 2, temperature: 0.5, topP: 0 }),
      "topP 1.5": () => gen(prompt, { maxTokens: 2, temperature: 0.5, topP: 1.5 }),
      "unknown option": () => gen(prompt, { maxTokens: 2, temprature: 0.5 }),
      "role robot": () => chat({ messages: [{ role: "user", content: "hi" }, { role: "robot", content: "beep" }], max_tokens: 2 }),
      "no content": () => chat({ messages: [{ role: "user" }], max_tokens: 2 }),
      "no messages": () => chat({ messages: [], max_tokens: 2 }),
    };
    const out = { vocab };
    for (const [name, run] of Object.entries(cases)) {
      const r = await run();
      out[name] = { ...r, busyAfter: engine.busy };
    }
    // abort() with nothing running, twice: a no-op, the next generation runs in full.
    engine.abort();
    engine.abort();
    out["after idle aborts"] = await gen(prompt, { maxTokens, temperature: 0 });
    return out;
  },

  /** destroy() every device the page made; resolves with their `lost` reasons. */
  async loseDevices() {
    const live = devices.splice(0);
    for (const d of live) d.destroy();
    const infos = await Promise.all(live.map((d) => d.lost));
    return infos.map((i) => i.reason);
  },

  /** chat.completions.create, streaming or not. */
  async chat(id, request) {
    const engine = engines.get(id);
    const t0 = performance.now();
    try {
      if (!request.stream) {
        const r = await engine.chat.completions.create(request);
        return { ok: true, response: r, ms: performance.now() - t0 };
      }
      const stream = await engine.chat.completions.create(request);
      const chunks = [];
      for await (const c of stream) chunks.push(c);
      let content = "";
      for (const c of chunks) content += c.choices?.[0]?.delta?.content ?? "";
      return { ok: true, chunks, content, ms: performance.now() - t0 };
    } catch (e) {
      return { ok: false, error: errJson(e), ms: performance.now() - t0 };
    }
  },

  async call(id, method, ...args) {
    const engine = engines.get(id);
    try {
      const v = await engine[method](...args);
      return { ok: true, value: v === undefined ? null : JSON.parse(JSON.stringify(ArrayBuffer.isView(v) ? Array.from(v) : v)) };
    } catch (e) {
      return { ok: false, error: errJson(e) };
    }
  },

  /** The page's GPU context counters (wasm `gpuCounters()`: buffers and bytes created and live, ...). */
  async gpuCounters() {
    const glue = await import(GLUE);
    return glue.gpuCounters?.() ?? null;
  },

  /**
   * A long chat on a page engine: `turns` OpenAI chat requests, each the last `window` exchanges plus
   * a new user message (so the KV prefix is partly reused, as in a real chat), streaming and not in
   * turn. After every turn: the GPU counters and wasm memory; JS heap after a full GC at the end of
   * warm-up and at the end. Returns the series for the runner to assert on.
   */
  async soak(id, { turns = 200, warmup = 20, maxTokens = 8, window = 2, seed = 7 }) {
    const engine = engines.get(id);
    const glue = await import(GLUE);
    const history = [];
    const series = [];
    let heapWarm;
    const t0 = performance.now();
    for (let t = 0; t < turns; t++) {
      const messages = [...(window > 0 ? history.slice(-2 * window) : []), { role: "user", content: `Turn ${t}: tell me one fact about the number ${(t * 37) % 101}.` }];
      const request = { messages, max_tokens: maxTokens, temperature: 0.7, seed: seed + t, stream: t % 2 === 1 };
      let content = "";
      try {
        if (request.stream) {
          for await (const c of await engine.chat.completions.create(request)) content += c.choices?.[0]?.delta?.content ?? "";
        } else {
          content = (await engine.chat.completions.create(request)).choices[0].message.content;
        }
      } catch (e) {
        return { ok: false, turn: t, error: errJson(e), series };
      }
      history.push(messages.at(-1), { role: "assistant", content });
      const c = glue.gpuCounters();
      series.push({
        turn: t, live: c.buffer_bytes_live, peak: c.peak_buffer_bytes, buffers: c.buffers_created,
        bindGroups: c.bind_groups_created, pipelines: c.pipelines_created, wasm: await wasmMemoryBytes(), chars: content.length,
      });
      if (t === warmup - 1) heapWarm = (await H.memoryAfterGc()).js?.used;
    }
    const heapEnd = (await H.memoryAfterGc()).js?.used;
    return { ok: true, series, heapWarm, heapEnd, ms: performance.now() - t0, busyAfter: engine.busy };
  },

  /**
   * `cycles` times: createEngine(options) (from the package's cache after the first), a few tokens,
   * unload. After each unload: the GPU counters, wasm memory and (after a GC) the JS heap.
   */
  async loadCycles(options, { cycles = 20, maxTokens = 4 }) {
    const glue = await import(GLUE);
    const out = [];
    for (let i = 0; i < cycles; i++) {
      let engine;
      try {
        engine = await pkg.createEngine(options);
        await engine.generate("Hello", { maxTokens }).result;
        await engine.unload();
      } catch (e) {
        return { ok: false, cycle: i, error: errJson(e), out };
      }
      const c = glue.gpuCounters();
      const m = await H.memoryAfterGc();
      out.push({ cycle: i, live: c.buffer_bytes_live, created: c.buffer_bytes_created, wasm: m.wasm, heap: m.js?.used });
    }
    return { ok: true, out };
  },

  async unload(id, keep = false) {
    const engine = engines.get(id);
    if (!keep) engines.delete(id); // keep: to call it after unload
    try {
      await engine?.unload();
      return { ok: true };
    } catch (e) {
      return { ok: false, error: errJson(e) };
    }
  },

  /**
   * Count (and time) WebGPU API calls made from this realm: patches GPUDevice/GPUQueue/GPUBuffer
   * prototypes. H.gpuCalls() returns {method: {n, ms}} since the last reset. Diagnostic only.
   */
  instrumentGpu() {
    if (H._gpuCalls) return true;
    const calls = (H._gpuCalls = {});
    const wrap = (proto, cls, names) => {
      for (const name of names) {
        const orig = proto[name];
        if (typeof orig !== "function") continue;
        proto[name] = function (...a) {
          const t = performance.now();
          const v = orig.apply(this, a);
          const c = (calls[`${cls}.${name}`] ??= { n: 0, ms: 0 });
          c.n++;
          c.ms += performance.now() - t;
          return v;
        };
      }
    };
    wrap(GPUDevice.prototype, "device", ["createComputePipeline", "createComputePipelineAsync", "createShaderModule", "createBindGroup", "createBuffer", "createCommandEncoder", "createBindGroupLayout", "createPipelineLayout"]);
    wrap(GPUQueue.prototype, "queue", ["submit", "writeBuffer", "onSubmittedWorkDone"]);
    wrap(GPUBuffer.prototype, "buffer", ["mapAsync", "destroy"]);
    wrap(GPUCommandEncoder.prototype, "encoder", ["beginComputePass", "copyBufferToBuffer"]);
    wrap(GPUComputePassEncoder.prototype, "pass", ["dispatchWorkgroups", "setPipeline", "setBindGroup"]);
    return true;
  },

  gpuCalls(reset = true) {
    const out = JSON.parse(JSON.stringify(H._gpuCalls ?? {}));
    if (reset && H._gpuCalls) for (const k of Object.keys(H._gpuCalls)) delete H._gpuCalls[k];
    return out;
  },

  /** Main-thread responsiveness: start a 10 ms timer; stopTicker() returns the longest gap between ticks. */
  startTicker() {
    const st = (H._ticker = { last: performance.now(), worst: 0, run: true, ticks: 0 });
    const tick = () => {
      const now = performance.now();
      st.worst = Math.max(st.worst, now - st.last);
      st.last = now;
      st.ticks++;
      if (st.run) setTimeout(tick, 10);
    };
    setTimeout(tick, 10);
    return true;
  },

  stopTicker() {
    const st = H._ticker;
    if (!st) return null;
    st.run = false;
    st.worst = Math.max(st.worst, performance.now() - st.last);
    return { worstGapMs: st.worst, ticks: st.ticks };
  },

  async isModelCached(url, options) {
    try {
      return { ok: true, value: await pkg.isModelCached(url, options) };
    } catch (e) {
      return { ok: false, error: errJson(e) };
    }
  },
};

// A synchronous reader of the wasm memory for progress callbacks, set once the module is initialised.
H._memNow = () => null;
const origInit = H.initWasm;
H.initWasm = async () => {
  const bytes = await origInit();
  const glue = await import(GLUE);
  const ex = await glue.default();
  H._memNow = () => ex.memory.buffer.byteLength;
  return bytes;
};

window.H = H;
window.harnessReady = H.ready().then(
  (r) => ({ ok: true, ...r }),
  (e) => ({ ok: false, error: errJson(e) }),
);
