// The side panel: "Ask about this page". Reads the active tab's text (page.js), builds a prompt that
// fits the model (prompt.js) and streams the local model's answer.
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
import { DEFAULT_MODEL_URL } from "./config.js";
import { readTab } from "./page.js";
import { buildMessages, fitToBudget } from "./prompt.js";

const DEFAULTS = { modelUrl: DEFAULT_MODEL_URL, pageBudget: 1024, maxTokens: 256 };
/** Tokens of a selection sent with "Explain selection" at most (on top of the page budget). */
const SELECTION_BUDGET = 256;
/** Tokens kept free for the system prompt, the template and the request when clamping the budget. */
const PROMPT_OVERHEAD = 160;

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
  pageInfo: $("page-info"),
  answer: $("answer"),
  error: $("error"),
  stats: $("stats"),
  promptInfo: $("prompt-info"),
  prompt: $("prompt"),
  optionsForm: $("options-form"),
  modelUrl: $("model-url"),
  modelFile: $("model-file"),
  pageBudget: $("page-budget"),
  maxTokens: $("max-tokens"),
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

/** Run `task` ("summarize" | "explain" | "question") on the target tab (or `tabId`). */
async function ask(task, { question = "", selection = "", tabId } = {}) {
  if (busy) return;
  busy = true;
  setRun("reading");
  ui.answer.textContent = "";
  ui.error.hidden = true;
  ui.stats.textContent = "";
  for (const k of ["promptTokens", "cachedTokens", "completionTokens", "finish"]) delete ui.stats.dataset[k];
  try {
    const page = await readTab(tabId ?? (await targetTabId()));
    ui.pageInfo.textContent = `About: ${page.title || page.url}`;
    if (task === "explain") {
      selection ||= page.selection;
      if (!selection) throw new UserError("Select some text on the page first, then press \u201cExplain selection\u201d.");
    }
    const engine = await getEngine();
    // The page text gets what the context leaves after the answer and the prompt's own words.
    const budget = Math.max(32, Math.min(settings.pageBudget, engine.modelInfo.context - settings.maxTokens - PROMPT_OVERHEAD - (task === "explain" ? SELECTION_BUDGET : 0)));
    const fitted = await fitToBudget(engine, page.text, budget);
    if (task === "explain") selection = (await fitToBudget(engine, selection, SELECTION_BUDGET)).text;
    const messages = buildMessages(task, page, { pageText: fitted.text, truncated: fitted.truncated, selection, question });
    ui.prompt.textContent = await engine.applyChatTemplate(messages);
    ui.promptInfo.textContent = fitted.truncated
      ? `The page was cut to ${budget} tokens (the page text budget under Options).`
      : `The whole page text (${fitted.tokens} tokens).`;
    ui.promptInfo.dataset.truncated = String(fitted.truncated);

    setRun("generating");
    ui.answer.setAttribute("aria-busy", "true");
    running = engine;
    const chunks = await engine.chat.completions.create({ messages, stream: true, max_tokens: settings.maxTokens });
    for await (const chunk of chunks) {
      const choice = chunk.choices[0];
      if (choice?.delta?.content) ui.answer.append(choice.delta.content);
      if (choice?.finish_reason) showStats(chunk, choice.finish_reason);
    }
    setRun("done");
  } catch (err) {
    ui.error.textContent = err instanceof UserError ? err.message : describeError(err);
    ui.error.hidden = false;
    if (err?.code === "DEVICE_LOST" && current) current = null;
    setRun("error");
  } finally {
    running = null;
    busy = false;
    ui.answer.setAttribute("aria-busy", "false");
    updateButtons();
  }
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
  for (const b of [ui.summarize, ui.explain, ui.ask]) b.disabled = busy || loadingNow;
  ui.stop.disabled = document.body.dataset.run !== "generating";
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
  ui.pageBudget.value = settings.pageBudget;
  ui.maxTokens.value = settings.maxTokens;
  ui.allSites.checked = await chrome.permissions.contains({ origins: ["<all_urls>"] }).catch(() => false);
}

async function saveSettings() {
  const next = {
    modelUrl: ui.modelUrl.value.trim(),
    pageBudget: clampInt(ui.pageBudget.value, 32, 32768, DEFAULTS.pageBudget),
    maxTokens: clampInt(ui.maxTokens.value, 1, 4096, DEFAULTS.maxTokens),
  };
  if (next.modelUrl) {
    try {
      const u = new URL(next.modelUrl);
      if (!/^https?:$/.test(u.protocol)) throw new Error();
    } catch {
      ui.optionsStatus.textContent = "The model URL must be an http(s):// URL.";
      return;
    }
  }
  const modelChanged = next.modelUrl !== settings.modelUrl;
  settings = next;
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
