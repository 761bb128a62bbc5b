// The side panel: "Ask about this page". Reads the active tab's text (page.js), builds a prompt that
// fits the model (prompt.js) and streams the local model's answer. "Extract" asks for JSON constrained
// to a schema (schemas.js: built-in ones, or one the user pastes) and shows it as tables. "Find by
// meaning" embeds the page's passages and the query with a second, small embedding model (in its own
// worker) and highlights the passages closest in meaning.
//
// Where the engine runs — the panel itself, with the wasm engine in a dedicated Web Worker
// (createWorkerEngine). Measured in Chromium 156 (headless, SwiftShader WebGPU) with this package and
// SmolLM2-135M: navigator.gpu gives an adapter in all four MV3 places (this page, a Worker it starts,
// an offscreen document, the service worker), and a model loads and generates in each of them. What
// decides is lifetime and plumbing, not WebGPU:
// - Service worker: Chrome stops it ~30 s after its last extension event, and one event may last at
//   most 5 minutes. A 167 s generation survived only because the caller kept a sendMessage reply
//   pending; between questions the worker (and the loaded model) goes away, so every question would
//   reload the model, and answers longer than 5 minutes die. WebGPU in service workers is also only
//   Chrome 124+.
// - Offscreen document: works and lives until closed, but needs the "offscreen" permission with a
//   reason that does not describe this (WORKERS), relays every token through runtime messages, and
//   keeps GPU memory after the panel is closed unless someone closes it.
// - This panel + a Worker: the engine lives exactly as long as the UI that shows its answers (closing
//   the panel frees the GPU memory), tokens reach the UI by the package's own worker messages, and the
//   worker keeps the panel responsive while a long prefill or download runs. Model files are cached
//   once in the extension origin's Cache API, so reopening the panel loads from disk with no request.

import { createWorkerEngine, deleteCachedModel, isModelCached } from "./pkg/index.js";
import { DEFAULT_EMBED_MODEL_URL, DEFAULT_MODEL_URL } from "./config.js";
import { findInTab, readTab } from "./page.js";
import { buildMessages, fitToBudget } from "./prompt.js";
import { CUSTOM, SCHEMAS, SchemaError, describeSchema, parseCustomSchema, toTables } from "./schemas.js";

// extractTokens: a list of ten contacts is ~300 tokens, more than a brief answer needs.
const DEFAULTS = { modelUrl: DEFAULT_MODEL_URL, embedModelUrl: DEFAULT_EMBED_MODEL_URL, pageBudget: 1024, maxTokens: 256, extractTokens: 512, schema: "facts", customSchema: "" };
/** Tokens of a selection sent with "Explain selection" at most (on top of the page budget). */
const SELECTION_BUDGET = 256;
/** Tokens kept free for the system prompt, the template and the request when clamping the budget. */
const PROMPT_OVERHEAD = 160;
/** Passages "Find by meaning" lists and highlights. */
const FIND_RESULTS = 5;

const $ = (id) => document.getElementById(id);
const ui = {
  modelStatus: $("model-status"),
  progress: $("model-progress"),
  load: $("load"),
  grant: $("grant-model"),
  summarize: $("summarize"),
  explain: $("explain"),
  form: $("question-form"),
  question: $("question"),
  ask: $("ask-button"),
  stop: $("stop"),
  extractForm: $("extract-form"),
  schema: $("schema"),
  extractButton: $("extract-button"),
  customSchemaField: $("custom-schema-field"),
  customSchema: $("custom-schema"),
  pageInfo: $("page-info"),
  answer: $("answer"),
  extracted: $("extracted"),
  tables: $("tables"),
  copy: $("copy"),
  copyStatus: $("copy-status"),
  error: $("error"),
  stats: $("stats"),
  promptInfo: $("prompt-info"),
  prompt: $("prompt"),
  optionsForm: $("options-form"),
  modelUrl: $("model-url"),
  embedModelUrl: $("embed-model-url"),
  findForm: $("find-form"),
  findQuery: $("find-query"),
  findButton: $("find-button"),
  findStatus: $("find-status"),
  findResults: $("find-results"),
  modelFile: $("model-file"),
  pageBudget: $("page-budget"),
  maxTokens: $("max-tokens"),
  extractTokens: $("extract-tokens"),
  allSites: $("all-sites"),
  clearCache: $("clear-cache"),
  optionsStatus: $("options-status"),
};

let settings = { ...DEFAULTS };
let pickedFile = null; // a File from <input type=file>: used until the panel closes, never cached
let current = null; // {key, engine}: the loaded model
let loading = null; // {key, promise}: the load in progress
let running = null; // the engine generating now (for Stop)
let busy = false;
let extractedJson = null; // the last extraction, pretty-printed (what Copy copies)
let embedder = null; // {url, engine}: the loaded embedding model
let embedLoading = null; // {url, promise}
let pageVectors = null; // {key, vectors, tokens, ms}: the last page's passages, embedded
let finding = false;

// A tab id in the URL (sidepanel.html?tab=N) pins the panel to that tab. Automation uses it, as the
// real side panel cannot be opened without a user gesture; without it the active tab of this window
// is read at each question.
const pinnedTab = Number(new URLSearchParams(location.search).get("tab")) || null;

class UserError extends Error {}

// ------------------------------------------------------------------------------------------------
// Model

function modelSource() {
  return pickedFile ?? settings.modelUrl;
}

function sourceKey(src) {
  return src instanceof File ? `file:${src.name}:${src.size}:${src.lastModified}` : String(src);
}

function sourceName(src) {
  if (src instanceof File) return src.name;
  try {
    return decodeURIComponent(new URL(src).pathname.split("/").filter(Boolean).pop() ?? src);
  } catch {
    return String(src);
  }
}

/** The engine for the chosen model: the loaded one, the one loading, or a new load. */
async function getEngine() {
  const src = modelSource();
  if (!src) throw new UserError("No model is set: enter a model URL or pick a .gguf file under Options.");
  const key = sourceKey(src);
  if (current?.key === key) return current.engine;
  if (loading?.key === key) return loading.promise;
  if (current) {
    const old = current.engine;
    current = null;
    await old.unload().catch(() => {});
  }
  const promise = loadEngine(src);
  loading = { key, promise };
  try {
    const engine = await promise;
    current = { key, engine };
    return engine;
  } finally {
    if (loading?.key === key) loading = null;
  }
}

async function loadEngine(src) {
  setModelState("loading");
  ui.grant.hidden = true;
  ui.load.hidden = true;
  ui.progress.hidden = false;
  ui.progress.removeAttribute("value");
  const name = sourceName(src);
  ui.modelStatus.textContent = `Loading ${name}…`;
  const t0 = performance.now();
  let fromCache = false;
  try {
    const engine = await createWorkerEngine({
      model: src,
      onProgress: (p) => {
        fromCache = p.fromCache ?? fromCache;
        showProgress(name, p);
      },
    });
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    const where = src instanceof File ? "from the file" : fromCache ? "from this computer's cache" : "downloaded";
    const gpu = engine.gpuInfo?.adapter ? ` on ${engine.gpuInfo.adapter}` : "";
    ui.modelStatus.textContent = `Ready: ${engine.modelId} (${where}, ${secs} s)${gpu}.`;
    document.body.dataset.fromCache = String(fromCache);
    setModelState("ready");
    return engine;
  } catch (err) {
    setModelState("error");
    ui.modelStatus.textContent = `The model did not load: ${describeError(err)}`;
    if (err?.code === "NETWORK" && typeof src === "string") offerGrant(src);
    else ui.load.hidden = false;
    throw new UserError(ui.modelStatus.textContent);
  } finally {
    ui.progress.hidden = true;
  }
}

const MB = 1e6;
function showProgress(name, p) {
  const total = p.totalBytes || 0;
  if (total > 0) ui.progress.value = Math.min(1, p.loadedBytes / total);
  const amount = total ? `${(p.loadedBytes / MB).toFixed(1)} / ${(total / MB).toFixed(1)} MB` : `${(p.loadedBytes / MB).toFixed(1)} MB`;
  const speed = p.bytesPerSecond ? ` · ${(p.bytesPerSecond / MB).toFixed(1)} MB/s` : "";
  const eta = Number.isFinite(p.etaSeconds) ? ` · about ${Math.ceil(p.etaSeconds)} s left` : "";
  const text = {
    manifest: `Looking up ${name}…`,
    download: `Downloading ${name}: ${amount}${speed}${eta} (only the first time)`,
    cache: `Loading ${name} from this computer's cache: ${amount}`,
    read: `Reading ${name}: ${amount}`,
    tokenizer: `Loading ${name}'s tokenizer…`,
    finalize: `Preparing ${name} on the GPU…`,
    ready: `Ready: ${name}`,
  }[p.phase];
  if (text) ui.modelStatus.textContent = text;
}

/** A model host without CORS headers can still be read if the user lets the extension access it. */
async function offerGrant(url) {
  let origins;
  try {
    origins = [`${new URL(url).origin}/*`];
  } catch {
    return;
  }
  if (await chrome.permissions.contains({ origins }).catch(() => true)) {
    ui.load.hidden = false;
    return;
  }
  ui.grant.textContent = `Allow access to ${new URL(url).host} and retry`;
  ui.grant.hidden = false;
  ui.grant.onclick = async () => {
    if (await chrome.permissions.request({ origins }).catch(() => false)) {
      ui.grant.hidden = true;
      getEngine().catch(() => {});
    }
  };
}

function setModelState(state) {
  document.body.dataset.model = state;
  updateButtons();
}

// ------------------------------------------------------------------------------------------------
// Asking

async function targetTabId() {
  if (pinnedTab) return pinnedTab;
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  return tab?.id;
}

/** Run `task` ("summarize" | "explain" | "question" | "extract") on the target tab (or `tabId`). */
async function ask(task, { question = "", selection = "", tabId } = {}) {
  if (busy) return;
  busy = true;
  setRun("reading");
  ui.answer.textContent = "";
  ui.answer.hidden = false;
  delete ui.answer.dataset.format;
  ui.extracted.hidden = true;
  ui.tables.replaceChildren();
  ui.copyStatus.textContent = "";
  extractedJson = null;
  ui.error.hidden = true;
  delete ui.error.dataset.kind;
  ui.stats.textContent = "";
  for (const k of ["promptTokens", "cachedTokens", "completionTokens", "finish"]) delete ui.stats.dataset[k];
  const maxTokens = task === "extract" ? settings.extractTokens : settings.maxTokens;
  try {
    // A pasted schema is checked before anything else runs: its mistakes are the user's to fix.
    const extract = task === "extract" ? chosenSchema() : null;
    const page = await readTab(tabId ?? (await targetTabId()));
    ui.pageInfo.textContent = `About: ${page.title || page.url}`;
    if (task === "explain") {
      selection ||= page.selection;
      if (!selection) throw new UserError("Select some text on the page first, then press \u201cExplain selection\u201d.");
    }
    const engine = await getEngine();
    // The page text gets what the context leaves after the answer and the prompt's own words.
    const budget = Math.max(32, Math.min(settings.pageBudget, engine.modelInfo.context - maxTokens - PROMPT_OVERHEAD - (task === "explain" ? SELECTION_BUDGET : 0)));
    const fitted = await fitToBudget(engine, page.text, budget);
    if (task === "explain") selection = (await fitToBudget(engine, selection, SELECTION_BUDGET)).text;
    const messages = buildMessages(task, page, { pageText: fitted.text, truncated: fitted.truncated, selection, question, what: extract?.what });
    ui.prompt.textContent = await engine.applyChatTemplate(messages);
    ui.promptInfo.textContent = fitted.truncated
      ? `The page was cut to ${budget} tokens (the page text budget under Options).`
      : `The whole page text (${fitted.tokens} tokens).`;
    ui.promptInfo.dataset.truncated = String(fitted.truncated);

    setRun("generating");
    ui.answer.setAttribute("aria-busy", "true");
    running = engine;
    const request = { messages, stream: true, max_tokens: maxTokens };
    if (extract) {
      // The engine constrains every token to the schema: the answer parses and validates, or it is
      // cut by max_tokens (finish "length"). A schema it cannot honour is BAD_REQUEST before any token.
      request.response_format = { type: "json_schema", json_schema: { name: extract.name, schema: extract.schema, strict: true } };
      ui.answer.dataset.format = "json";
    }
    const chunks = await engine.chat.completions.create(request);
    let finish = null;
    for await (const chunk of chunks) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) ui.answer.append(choice.delta.content);
      if (choice?.finish_reason) showStats(chunk, (finish = choice.finish_reason));
    }
    if (extract && finish === "length") {
      ui.error.dataset.kind = "cut";
      throw new UserError(
        `The output was cut at ${maxTokens} tokens, before the JSON was complete (the partial JSON is above). ` +
          "Raise \u201cLongest extraction\u201d under Options, or lower the page text budget so fewer items are found.",
      );
    }
    if (extract && finish === "stop") showExtracted(ui.answer.textContent);
    setRun("done");
  } catch (err) {
    if (err instanceof SchemaError) ui.error.dataset.kind = "schema";
    else if (isSchemaRefusal(err)) ui.error.dataset.kind = "schema";
    ui.error.textContent = err instanceof UserError || err instanceof SchemaError ? err.message : describeError(err);
    ui.error.hidden = false;
    if (ui.error.dataset.kind === "schema" && !ui.customSchemaField.hidden) ui.customSchema.focus();
    if (err?.code === "DEVICE_LOST" && current) current = null;
    setRun("error");
  } finally {
    running = null;
    busy = false;
    ui.answer.setAttribute("aria-busy", "false");
    updateButtons();
  }
}

// ------------------------------------------------------------------------------------------------
// Find by meaning

/** The embedding engine for the Options URL: the loaded one, the one loading, or a new load. */
async function getEmbedder() {
  const url = settings.embedModelUrl;
  if (!url) throw new UserError("No embedding model is set: enter its URL under Options (a package converted from a sentence-transformers model such as all-MiniLM-L6-v2).");
  if (embedder?.url === url) return embedder.engine;
  if (embedLoading?.url === url) return embedLoading.promise;
  if (embedder) {
    const old = embedder.engine;
    embedder = null;
    pageVectors = null;
    await old.unload().catch(() => {});
  }
  const name = sourceName(url);
  const promise = (async () => {
    let engine;
    try {
      engine = await createWorkerEngine({
        model: url,
        onProgress: (p) => {
          const total = p.totalBytes ? ` ${(p.loadedBytes / MB).toFixed(1)} / ${(p.totalBytes / MB).toFixed(1)} MB` : "";
          ui.findStatus.textContent = `Loading the embedding model ${name}:${total}${p.fromCache ? " (from this computer's cache)" : ""}`;
        },
      });
    } catch (err) {
      throw new UserError(`The embedding model did not load: ${describeError(err)}`);
    }
    if (engine.modelInfo.task !== "embed") {
      await engine.unload().catch(() => {});
      throw new UserError(`${name} is a text-generating model, not an embedding model: set an embedding model's URL under Options.`);
    }
    return engine;
  })();
  embedLoading = { url, promise };
  try {
    const engine = await promise;
    embedder = { url, engine };
    return engine;
  } finally {
    if (embedLoading?.url === url) embedLoading = null;
  }
}

function cosine(a, b) {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / Math.sqrt(aa * bb || 1);
}

/** Embed the page's passages (once per page text) and the query; list and highlight the closest. */
async function find(query, { tabId } = {}) {
  if (finding) return;
  finding = true;
  setFind("reading");
  ui.findResults.replaceChildren();
  delete ui.findStatus.dataset.kind;
  ui.findStatus.textContent = "Reading the page…";
  try {
    tabId ??= await targetTabId();
    const page = await findInTab(tabId);
    if (page.passages.length === 0) throw new UserError("There is no text on this page to search.");
    const engine = await getEmbedder();
    setFind("embedding");
    const key = `${page.url}\n${page.passages.map((p) => p.text).join("\n")}`;
    if (pageVectors?.key !== key) {
      ui.findStatus.textContent = `Reading ${page.passages.length} passages with ${engine.modelId}…`;
      // Passages are cut to what the model takes (truncate): a long one still gets a vector.
      const r = await engine.embeddings.create({ input: page.passages.map((p) => p.text), truncate: "end" });
      pageVectors = { key, vectors: r.data.map((d) => d.embedding), tokens: r.usage.prompt_tokens, ms: r.timings.total_ms };
    }
    const t0 = performance.now();
    const q = (await engine.embeddings.create({ input: query, truncate: "end" })).data[0].embedding;
    const queryMs = performance.now() - t0;
    const hits = pageVectors.vectors
      .map((v, i) => ({ ...page.passages[i], score: cosine(q, v) }))
      .sort((a, b) => b.score - a.score)
      .slice(0, FIND_RESULTS);
    const shown = await findInTab(tabId, hits);
    ui.findResults.replaceChildren(
      ...hits.map((hit, i) => {
        const li = document.createElement("li");
        li.tabIndex = 0;
        li.dataset.score = hit.score.toFixed(4);
        li.append(Object.assign(document.createElement("span"), { className: "score", textContent: hit.score.toFixed(2) }));
        li.append(Object.assign(document.createElement("span"), { className: "passage", textContent: hit.text }));
        // Clicking a result makes it the one marked strongest and scrolls to it.
        const focus = () => findInTab(tabId, [hit, ...hits.filter((_, j) => j !== i)]).catch((err) => showFindError(err));
        li.addEventListener("click", focus);
        li.addEventListener("keydown", (ev) => ev.key === "Enter" && focus());
        return li;
      }),
    );
    const embedded = `${page.passages.length} passages (${pageVectors.tokens} tokens) read in ${(pageVectors.ms / 1000).toFixed(1)} s`;
    ui.findStatus.textContent = `The ${hits.length} passages closest in meaning, highlighted on the page (${shown.highlighted}). ${embedded}; the query took ${queryMs.toFixed(0)} ms.`;
    setFind("done");
  } catch (err) {
    showFindError(err);
    if (err?.code === "DEVICE_LOST") embedder = null;
    setFind("error");
  } finally {
    finding = false;
    updateButtons();
  }
}

function showFindError(err) {
  ui.findStatus.dataset.kind = "error";
  ui.findStatus.textContent = err instanceof UserError ? err.message : describeError(err);
}

function setFind(state) {
  document.body.dataset.find = state;
  updateButtons();
}

// ------------------------------------------------------------------------------------------------
// Extract

/** The schema chosen in the menu: {name, schema, what}; a pasted one is parsed (SchemaError if bad). */
function chosenSchema() {
  if (settings.schema === CUSTOM) {
    const schema = parseCustomSchema(ui.customSchema.value);
    return { name: "custom", schema, what: describeSchema(schema) };
  }
  const s = SCHEMAS[settings.schema] ?? SCHEMAS[DEFAULTS.schema];
  return { name: settings.schema in SCHEMAS ? settings.schema : DEFAULTS.schema, schema: s.schema, what: s.what };
}

/** The finished extraction: parse it, lay it out as tables, keep it for Copy. */
function showExtracted(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // Not expected (the output is constrained), so say so plainly rather than show a broken table.
    throw new UserError(`The model's output is not valid JSON (${err.message}); please report this.`);
  }
  extractedJson = JSON.stringify(value, null, 2);
  const tables = toTables(value).map(({ caption, columns, rows }) => {
    const table = document.createElement("table");
    if (caption) table.createCaption().textContent = `${caption} (${rows.length})`;
    const head = table.createTHead().insertRow();
    for (const c of columns) head.append(Object.assign(document.createElement("th"), { scope: "col", textContent: c }));
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      for (const cell of row) tr.insertCell().textContent = cell;
    }
    if (rows.length === 0) {
      const td = body.insertRow().insertCell();
      td.colSpan = columns.length;
      td.className = "empty";
      td.textContent = "Nothing found on the page.";
    }
    return table;
  });
  ui.tables.replaceChildren(...tables);
  ui.extracted.hidden = false;
}

async function copyExtracted() {
  if (extractedJson == null) return;
  try {
    await navigator.clipboard.writeText(extractedJson);
  } catch {
    // The Clipboard API wants a focused document; the older command works from the click itself.
    const area = Object.assign(document.createElement("textarea"), { value: extractedJson });
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) {
      ui.copyStatus.textContent = "Could not copy: select the JSON above and copy it by hand.";
      return;
    }
  }
  ui.copyStatus.textContent = "Copied.";
}

function showSchemaChoice() {
  ui.schema.value = settings.schema in SCHEMAS || settings.schema === CUSTOM ? settings.schema : DEFAULTS.schema;
  ui.customSchemaField.hidden = ui.schema.value !== CUSTOM;
}

function showStats(chunk, finish) {
  const u = chunk.usage ?? {};
  const t = chunk.timings ?? {};
  const cached = u.prompt_tokens_details?.cached_tokens ?? 0;
  const rate = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
  const ended = { stop: "", length: " · stopped at the answer length limit", abort: " · stopped" }[finish] ?? "";
  ui.stats.textContent =
    `${u.prompt_tokens} prompt tokens (${cached} reused) at ${rate(t.prefill_tokens_per_second)} tok/s · ` +
    `${u.completion_tokens} answer tokens at ${rate(t.decode_tokens_per_second)} tok/s${ended}`;
  Object.assign(ui.stats.dataset, {
    promptTokens: u.prompt_tokens,
    cachedTokens: cached,
    completionTokens: u.completion_tokens,
    finish,
  });
}

function setRun(state) {
  document.body.dataset.run = state;
  updateButtons();
}

function updateButtons() {
  const loadingNow = document.body.dataset.model === "loading";
  for (const b of [ui.summarize, ui.explain, ui.ask, ui.extractButton]) b.disabled = busy || loadingNow;
  ui.findButton.disabled = finding;
  ui.stop.disabled = document.body.dataset.run !== "generating";
}

/** BAD_REQUEST for the schema: the engine names its option "json_schema" (the JS option is jsonSchema). */
function isSchemaRefusal(err) {
  return err?.code === "BAD_REQUEST" && ["json_schema", "jsonSchema", "response_format"].includes(err.option);
}

function describeError(err) {
  const msg = err?.message ?? String(err);
  switch (err?.code) {
    case "WEBGPU_UNAVAILABLE":
      return `WebGPU is not available here (${msg}). Use Chrome 116 or newer with hardware acceleration on (Settings → System); on Linux, WebGPU may need chrome://flags/#enable-unsafe-webgpu.`;
    case "OUT_OF_MEMORY":
      return `The model does not fit in this GPU's memory. Choose a smaller model under Options. (${msg})`;
    case "FEATURE_MISSING":
    case "LIMIT_TOO_SMALL":
      return `This GPU cannot run this model: ${msg}`;
    case "CONTEXT_OVERFLOW":
      return `The prompt is too long for the model: lower the page text budget under Options. (${msg})`;
    case "DEVICE_LOST":
      return `The GPU was reset (${msg}). Ask again to reload the model.`;
    case "NETWORK":
      return `Could not download the model: ${msg}`;
    case "BAD_REQUEST":
      if (isSchemaRefusal(err)) return `The model cannot follow this schema: ${msg}. Change the schema and extract again.`;
      return `${msg} [${err.code}]`;
    default:
      return err?.code ? `${msg} [${err.code}]` : msg;
  }
}

// ------------------------------------------------------------------------------------------------
// Settings

async function loadSettings() {
  const stored = await chrome.storage.local.get(Object.keys(DEFAULTS));
  settings = { ...DEFAULTS, ...stored };
  ui.modelUrl.value = settings.modelUrl;
  ui.embedModelUrl.value = settings.embedModelUrl;
  ui.pageBudget.value = settings.pageBudget;
  ui.maxTokens.value = settings.maxTokens;
  ui.extractTokens.value = settings.extractTokens;
  ui.customSchema.value = settings.customSchema;
  showSchemaChoice();
  ui.allSites.checked = await chrome.permissions.contains({ origins: ["<all_urls>"] }).catch(() => false);
}

async function saveSettings() {
  const next = {
    modelUrl: ui.modelUrl.value.trim(),
    embedModelUrl: ui.embedModelUrl.value.trim(),
    pageBudget: clampInt(ui.pageBudget.value, 32, 32768, DEFAULTS.pageBudget),
    maxTokens: clampInt(ui.maxTokens.value, 1, 4096, DEFAULTS.maxTokens),
    extractTokens: clampInt(ui.extractTokens.value, 1, 4096, DEFAULTS.extractTokens),
  };
  for (const [url, what] of [[next.modelUrl, "model URL"], [next.embedModelUrl, "embedding model URL"]]) {
    if (!url) continue;
    try {
      const u = new URL(url);
      if (!/^https?:$/.test(u.protocol)) throw new Error();
    } catch {
      ui.optionsStatus.textContent = `The ${what} must be an http(s):// URL.`;
      return;
    }
  }
  const modelChanged = next.modelUrl !== settings.modelUrl;
  settings = { ...settings, ...next };
  await chrome.storage.local.set(next);
  if (modelChanged && !pickedFile) {
    ui.modelStatus.textContent = next.modelUrl ? `Model set to ${sourceName(next.modelUrl)}: it loads with your next question.` : "No model set.";
    ui.load.hidden = !next.modelUrl;
  }
  ui.optionsStatus.textContent = "Saved.";
}

function clampInt(value, lo, hi, fallback) {
  const n = Math.round(Number(value));
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : fallback;
}

// ------------------------------------------------------------------------------------------------
// Wiring

ui.summarize.addEventListener("click", () => ask("summarize"));
ui.explain.addEventListener("click", () => ask("explain"));
ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const question = ui.question.value.trim();
  if (question) ask("question", { question });
});
ui.question.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    ui.form.requestSubmit();
  }
});
ui.stop.addEventListener("click", () => running?.abort());
ui.findForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const query = ui.findQuery.value.trim();
  if (query) find(query);
});
for (const [key, { label }] of [...Object.entries(SCHEMAS), [CUSTOM, { label: "My own JSON Schema\u2026" }]]) {
  ui.schema.append(new Option(label, key));
}
ui.extractForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  ask("extract");
});
// The schema menu and a pasted schema are kept as they change (no Save needed), like a draft.
ui.schema.addEventListener("change", () => {
  settings.schema = ui.schema.value;
  showSchemaChoice();
  chrome.storage.local.set({ schema: settings.schema });
  if (!ui.customSchemaField.hidden) ui.customSchema.focus();
});
ui.customSchema.addEventListener("input", () => {
  settings.customSchema = ui.customSchema.value;
  chrome.storage.local.set({ customSchema: settings.customSchema });
});
ui.copy.addEventListener("click", () => copyExtracted());
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape") running?.abort();
});
ui.load.addEventListener("click", () => getEngine().catch(() => {}));
ui.optionsForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  saveSettings().catch((err) => (ui.optionsStatus.textContent = String(err?.message ?? err)));
});
ui.modelFile.addEventListener("change", () => {
  const file = ui.modelFile.files?.[0];
  if (!file) return;
  pickedFile = file;
  ui.optionsStatus.textContent = `Using ${file.name} until this panel closes (it is read from disk, not copied).`;
  getEngine().catch(() => {});
});
ui.allSites.addEventListener("change", async () => {
  const origins = ["<all_urls>"];
  // permissions.request needs this click's user gesture: it is the first call.
  const ok = ui.allSites.checked
    ? await chrome.permissions.request({ origins }).catch(() => false)
    : !(await chrome.permissions.remove({ origins }).catch(() => false));
  ui.allSites.checked = ok;
});
ui.clearCache.addEventListener("click", async () => {
  if (!settings.modelUrl) return;
  try {
    await deleteCachedModel(settings.modelUrl);
    ui.optionsStatus.textContent = `Deleted the cached copy of ${sourceName(settings.modelUrl)}.`;
  } catch (err) {
    ui.optionsStatus.textContent = describeError(err);
  }
});

// A context-menu "Explain …" click (background.js) leaves its request in session storage.
async function takePending() {
  const { pending } = await chrome.storage.session.get("pending");
  if (!pending) return;
  await chrome.storage.session.remove("pending");
  if (Date.now() - pending.at < 60_000) ask(pending.kind, { selection: pending.selection, tabId: pending.tabId });
}
chrome.storage.session.onChanged.addListener((changes) => {
  if (changes.pending?.newValue) takePending();
});

async function start() {
  await loadSettings();
  setModelState("none");
  setRun("idle");
  setFind("idle");
  const src = modelSource();
  if (!src) {
    ui.modelStatus.textContent = "No model set: enter a model URL or pick a .gguf file under Options.";
    $("options").open = true;
  } else if (await isModelCached(src).catch(() => false)) {
    // Downloaded before: load it now from the cache (no network request), so the first answer is quick.
    getEngine().catch(() => {});
  } else {
    ui.modelStatus.textContent = `The model (${sourceName(src)}) is downloaded with your first question, once.`;
    ui.load.hidden = false;
  }
  takePending();
}

start();
