// Structured-output test page: imports the npm package (pkg/index.js) and exposes `window.T`, helpers
// that tests/browser/structured.mjs calls with page.evaluate. Each returns plain JSON (errors as
// {code, name, message, option, ...}); the runner validates every output in Node.

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

const T = {
  /** createEngine, or createWorkerEngine with `worker`. */
  async create({ worker = false, options = {} }) {
    const t0 = performance.now();
    try {
      const engine = await (worker ? pkg.createWorkerEngine : pkg.createEngine)(options);
      const id = nextId++;
      engines.set(id, engine);
      return { ok: true, id, ms: performance.now() - t0, vocab: engine.modelInfo?.vocab };
    } catch (e) {
      return { ok: false, error: errJson(e) };
    }
  },

  /**
   * engine.generate, chunks collected. `abortAfter`: engine.abort() after that many chunks;
   * `signalAfter`: abort an AbortSignal passed in the options after that many chunks.
   */
  async generate(id, prompt, options = {}, { abortAfter, signalAfter } = {}) {
    const engine = engines.get(id);
    const ac = signalAfter !== undefined ? new AbortController() : undefined;
    const t0 = performance.now();
    const chunks = [];
    let error, result, resultError;
    try {
      const stream = engine.generate(prompt, ac ? { ...options, signal: ac.signal } : options);
      try {
        for await (const c of stream) {
          chunks.push(c);
          if (chunks.length === abortAfter) engine.abort();
          if (chunks.length === signalAfter) ac.abort();
        }
      } catch (e) {
        error = errJson(e);
      }
      try {
        result = await stream.result;
      } catch (e) {
        resultError = errJson(e);
      }
    } catch (e) {
      error = errJson(e); // thrown by generate() itself
    }
    return {
      text: chunks.map((c) => c.text).join(""), ids: chunks.map((c) => c.tokenId),
      error, result, resultError, busyAfter: engine.busy, ms: performance.now() - t0,
    };
  },

  /** chat.completions.create; streamed chunks are returned with their reassembled content. */
  async chat(id, request) {
    const engine = engines.get(id);
    const t0 = performance.now();
    try {
      if (!request.stream) return { ok: true, response: await engine.chat.completions.create(request), ms: performance.now() - t0 };
      const chunks = [];
      for await (const c of await engine.chat.completions.create(request)) chunks.push(c);
      const content = chunks.map((c) => c.choices?.[0]?.delta?.content ?? "").join("");
      return { ok: true, chunks, content, ms: performance.now() - t0 };
    } catch (e) {
      return { ok: false, error: errJson(e), ms: performance.now() - t0 };
    }
  },

  /** engine.encode without special tokens. */
  async encode(id, text) {
    return await engines.get(id).encode(text, { addSpecialTokens: false });
  },

  /** engine.applyChatTemplate with `{tools, tool_choice}`. */
  async template(id, messages, options) {
    try {
      return { ok: true, text: await engines.get(id).applyChatTemplate(messages, options) };
    } catch (e) {
      return { ok: false, error: errJson(e) };
    }
  },

  async unload(id) {
    const engine = engines.get(id);
    engines.delete(id);
    await engine?.unload();
    return true;
  },
};

window.T = T;
window.harnessReady = import("/pkg/index.js").then(
  (m) => ((pkg = m), { ok: true }),
  (e) => ({ ok: false, error: errJson(e) }),
);
