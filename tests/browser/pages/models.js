// Reference-model test page: imports the npm package (pkg/index.js) and exposes `window.M`, helpers
// that tests/browser/models.mjs calls with page.evaluate. Each returns plain JSON (errors as
// {code, name, message, ...}); every comparison with transformers' tokens is made in Node.

let pkg;
const engines = new Map();
let nextId = 1;

function errJson(e) {
  if (!e || typeof e !== "object") return { code: "THROWN_NON_ERROR", message: String(e) };
  const out = { name: e.name, code: e.code, message: e.message };
  for (const k of Object.keys(e)) {
    if (["code", "message", "name", "stack", "cause"].includes(k)) continue;
    try {
      out[k] = JSON.parse(JSON.stringify(e[k]));
    } catch {
      out[k] = String(e[k]);
    }
  }
  return out;
}

const M = {
  /** createEngine, or createWorkerEngine with `worker`: {ok, id, ms, modelInfo, gpuInfo}. */
  async create({ worker = false, options = {} }) {
    const t0 = performance.now();
    try {
      const engine = await (worker ? pkg.createWorkerEngine : pkg.createEngine)(options);
      const id = nextId++;
      engines.set(id, engine);
      return { ok: true, id, ms: performance.now() - t0, modelInfo: engine.modelInfo, gpuInfo: engine.gpuInfo };
    } catch (e) {
      return { ok: false, error: errJson(e), ms: performance.now() - t0 };
    }
  },

  /** engine.generate on token ids (or text): streamed ids and the result. */
  async generate(id, prompt, options = {}) {
    const engine = engines.get(id);
    const t0 = performance.now();
    const ids = [];
    let error, result;
    try {
      const stream = engine.generate(prompt, options);
      for await (const c of stream) ids.push(c.tokenId);
      result = await stream.result;
    } catch (e) {
      error = errJson(e);
    }
    return { ids, result, error, ms: performance.now() - t0 };
  },

  /** chat.completions.create, not streamed. */
  async chat(id, request) {
    const t0 = performance.now();
    try {
      return { ok: true, response: await engines.get(id).chat.completions.create(request), ms: performance.now() - t0 };
    } catch (e) {
      return { ok: false, error: errJson(e), ms: performance.now() - t0 };
    }
  },

  /** engine.encode of each `[text, addSpecialTokens]`. */
  async encodeAll(id, cases) {
    const engine = engines.get(id);
    const out = [];
    for (const [text, addSpecialTokens] of cases) {
      try {
        out.push({ ids: await engine.encode(text, { addSpecialTokens }) });
      } catch (e) {
        out.push({ error: errJson(e) });
      }
    }
    return out;
  },

  async decode(id, ids) {
    return await engines.get(id).decode(ids);
  },

  /** engine.applyChatTemplate of each messages list. */
  async templates(id, conversations) {
    const engine = engines.get(id);
    const out = [];
    for (const messages of conversations) {
      try {
        out.push({ text: await engine.applyChatTemplate(messages) });
      } catch (e) {
        out.push({ error: errJson(e) });
      }
    }
    return out;
  },

  /** engine.embeddings.create: the response, or the error. */
  async embed(id, request) {
    const t0 = performance.now();
    try {
      return { ok: true, response: await engines.get(id).embeddings.create(request), ms: performance.now() - t0 };
    } catch (e) {
      return { ok: false, error: errJson(e), ms: performance.now() - t0 };
    }
  },

  /** Several embeddings.create calls started at once (they queue): each response or error. */
  async embedConcurrently(id, requests) {
    const engine = engines.get(id);
    const settled = await Promise.allSettled(requests.map((r) => engine.embeddings.create(r)));
    return settled.map((s) => (s.status === "fulfilled" ? { ok: true, response: s.value } : { ok: false, error: errJson(s.reason) }));
  },

  /** An embeddings.create whose signal is aborted while it waits behind another request. */
  async embedAborted(id, first, second) {
    const engine = engines.get(id);
    const ac = new AbortController();
    const a = engine.embeddings.create(first);
    const b = engine.embeddings.create(second, { signal: ac.signal });
    ac.abort();
    const [ra, rb] = await Promise.allSettled([a, b]);
    return {
      first: ra.status === "fulfilled" ? { ok: true } : { ok: false, error: errJson(ra.reason) },
      second: rb.status === "fulfilled" ? { ok: true } : { ok: false, error: errJson(rb.reason) },
    };
  },

  async unload(id) {
    const engine = engines.get(id);
    engines.delete(id);
    await engine?.unload();
    return true;
  },
};

window.M = M;
window.harnessReady = import("/pkg/index.js").then(
  (m) => ((pkg = m), { ok: true }),
  (e) => ({ ok: false, error: errJson(e) }),
);
