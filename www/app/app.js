// The offline-first chat app: the webgpu-llm package with its engine in a Web Worker, a model picker
// (default GGUF, any URL, a local file or drag and drop), streamed answers, live figures, and chats
// kept in localStorage. Static files only; sw.js keeps them (and the package) for offline use, the
// package keeps the model's bytes in its own cache.

import { PKG_URL, DEFAULT_MODEL, STORAGE_PREFIX } from "./config.js";

const $ = (id) => document.getElementById(id);
const app = $("app");
const ui = {
  menuButton: $("menu-button"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  modelChip: $("model-chip"),
  modelChipText: $("model-chip-text"),
  netChip: $("net-chip"),
  newChatTop: $("new-chat-top"),
  newChatSide: $("new-chat-side"),
  chatList: $("chat-list"),
  temperature: $("temperature"),
  temperatureOut: $("temperature-out"),
  topP: $("top-p"),
  topPOut: $("top-p-out"),
  maxTokens: $("max-tokens"),
  systemPrompt: $("system-prompt"),
  jsonMode: $("json-mode"),
  jsonToggle: $("json-toggle"),
  jsonSchema: $("json-schema"),
  jsonSchemaError: $("json-schema-error"),
  modelSummary: $("model-summary"),
  changeModel: $("change-model"),
  forgetModel: $("forget-model"),
  main: $("main"),
  welcome: $("welcome"),
  loadDefault: $("load-default"),
  loadDefaultLabel: $("load-default-label"),
  loadDefaultSub: $("load-default-sub"),
  chooseModel: $("choose-model"),
  welcomeNote: $("welcome-note"),
  unsupported: $("unsupported"),
  unsupportedReason: $("unsupported-reason"),
  loadPanel: $("load-panel"),
  loadHeading: $("load-heading"),
  loadPhase: $("load-phase"),
  loadProgress: $("load-progress"),
  loadFigures: $("load-figures"),
  loadCancel: $("load-cancel"),
  notice: $("notice"),
  noticeHeading: $("notice-heading"),
  noticeBody: $("notice-body"),
  noticeTips: $("notice-tips"),
  noticeDetails: $("notice-details"),
  noticeCode: $("notice-code"),
  noticeMessage: $("notice-message"),
  noticeActions: $("notice-actions"),
  messages: $("messages"),
  emptyChat: $("empty-chat"),
  emptyModel: $("empty-model"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  figPrefill: $("fig-prefill"),
  figDecode: $("fig-decode"),
  figContext: $("fig-context"),
  dialog: $("model-dialog"),
  modelForm: $("model-form"),
  modelUrl: $("model-url"),
  modelFile: $("model-file"),
  dropzone: $("dropzone"),
  contextSize: $("context-size"),
  modelFormError: $("model-form-error"),
  modelCancel: $("model-cancel"),
  dialogDefaultName: $("dialog-default-name"),
  dialogDefaultDetail: $("dialog-default-detail"),
  dialogDefaultCached: $("dialog-default-cached"),
  dropOverlay: $("drop-overlay"),
  srStatus: $("sr-status"),
};

// ---------------------------------------------------------------------------------------------
// Storage (localStorage, JSON values under STORAGE_PREFIX)

const storage = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(STORAGE_PREFIX + key);
      return v == null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(STORAGE_PREFIX + key, JSON.stringify(value));
      return true;
    } catch (err) {
      console.warn("could not save to localStorage", err);
      return false;
    }
  },
};

// json: JSON mode (answers constrained to a JSON object, or to jsonSchema when one is given).
const DEFAULT_SETTINGS = { temperature: 0.7, topP: 0.9, maxTokens: 256, system: "", context: "", json: false, jsonSchema: "" };
const settings = { ...DEFAULT_SETTINGS, ...storage.get("settings", {}) };
const MAX_CHATS = 50;

let chats = storage.get("chats", []);
if (!Array.isArray(chats)) chats = [];
let currentChatId = storage.get("current", null);

function saveSettings() {
  storage.set("settings", settings);
}

let saveTimer = 0;
function saveChats({ soon = false } = {}) {
  clearTimeout(saveTimer);
  const write = () => {
    chats.sort((a, b) => b.updated - a.updated);
    if (chats.length > MAX_CHATS) chats.length = MAX_CHATS;
    if (!storage.set("chats", chats)) {
      // Out of room: drop the oldest chats until it fits (the current one stays).
      while (chats.length > 1 && !storage.set("chats", chats)) chats.pop();
    }
    storage.set("current", currentChatId);
  };
  if (soon) saveTimer = setTimeout(write, 1000);
  else write();
}

function newChatObject() {
  return { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: "New chat", created: Date.now(), updated: Date.now(), messages: [] };
}

function currentChat() {
  let chat = chats.find((c) => c.id === currentChatId);
  if (!chat) {
    chat = chats.find((c) => c.messages.length === 0) ?? newChatObject();
    if (!chats.includes(chat)) chats.unshift(chat);
    currentChatId = chat.id;
  }
  return chat;
}

// A reply that was streaming when the page went away.
for (const chat of chats) {
  for (const m of chat.messages ?? []) if (m.state === "streaming") m.state = m.content ? "interrupted" : "error";
}

// ---------------------------------------------------------------------------------------------
// Formatting

const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });

function fmtBytes(b) {
  if (!Number.isFinite(b)) return "?";
  if (b >= 1e9) return `${nf1.format(b / 1e9)} GB`;
  if (b >= 1e6) return `${nf1.format(b / 1e6)} MB`;
  if (b >= 1e3) return `${nf0.format(b / 1e3)} kB`;
  return `${nf0.format(b)} B`;
}

/** "about 12 s left", "less than a second left". */
function fmtEta(s) {
  if (!Number.isFinite(s)) return "";
  if (s < 1) return "less than a second left";
  if (s < 90) return `about ${Math.round(s)} s left`;
  if (s < 3600) return `about ${Math.round(s / 60)} min left`;
  return `about ${nf1.format(s / 3600)} h left`;
}

const fmtRate = (tps) => (Number.isFinite(tps) && tps > 0 ? `${nf1.format(tps)} tok/s` : "–");

function fmtWhen(t) {
  const d = new Date(t);
  const today = new Date();
  return d.toDateString() === today.toDateString()
    ? d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

function announce(text) {
  ui.srStatus.textContent = "";
  // A new text node after a tick, so the same message is announced again.
  setTimeout(() => (ui.srStatus.textContent = text), 50);
}

// ---------------------------------------------------------------------------------------------
// State

let llm = null; // the package's module
let engine = null;
let worker = null;
let loading = null; // {controller, source}
let generating = false;
let current = null; // the model loaded: {source, modelId, info}
let lastUsedTokens = null;
let adapterLabel = ""; // "google swiftshader", from the page's own adapter

function setEngineState(state) {
  app.dataset.engine = state; // starting | unsupported | none | loading | ready | error
  const ready = state === "ready";
  ui.prompt.disabled = !ready;
  ui.prompt.placeholder = ready ? "Message" : state === "loading" ? "Loading the model…" : "Load a model to start";
  updateSendButton();
  updateChip();
}

function updateSendButton() {
  const ready = app.dataset.engine === "ready";
  ui.send.disabled = !ready || generating || ui.prompt.value.trim() === "";
  ui.send.hidden = generating;
  ui.stop.hidden = !generating;
}

function updateChip() {
  const state = app.dataset.engine;
  let text = "No model";
  if (state === "loading") text = loading?.percent != null ? `Loading ${loading.percent}%` : "Loading…";
  else if (state === "ready" && current) text = current.modelId;
  else if (state === "unsupported") text = "No WebGPU";
  else if (state === "error") text = "No model";
  ui.modelChipText.textContent = text;
  ui.modelChip.dataset.state = state;
}

function show(el, on) {
  el.hidden = !on;
}

// ---------------------------------------------------------------------------------------------
// Messages

function messageElement(msg) {
  const el = document.createElement("article");
  el.className = `msg ${msg.role}`;
  el.dataset.role = msg.role;
  const who = document.createElement("h3");
  who.className = "who";
  who.textContent = msg.role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  const meta = document.createElement("p");
  meta.className = "meta";
  el.append(who, body, meta);
  el._body = body;
  el._meta = meta;
  el._text = body; // where streamed text goes
  if (msg.format === "json") {
    // A JSON-mode answer is code: streamed as it comes, pretty-printed once it is complete.
    el.classList.add("json");
    const pre = document.createElement("pre");
    el._text = pre.appendChild(document.createElement("code"));
    body.append(pre);
  }
  el._text.textContent = msg.content;
  updateMessageMeta(el, msg);
  return el;
}

/** Pretty-print a finished JSON-mode answer (2-space indent); `data-json` says whether it parsed. */
function renderJsonBody(el, msg) {
  if (msg.format !== "json" || msg.state === "streaming" || !msg.content) return;
  try {
    el._text.textContent = JSON.stringify(JSON.parse(msg.content), null, 2);
    el.dataset.json = "valid";
  } catch {
    // Cut by the max-tokens limit (or stopped): shown as it came, and the note says so.
    el._text.textContent = msg.content;
    el.dataset.json = "incomplete";
  }
}

function updateMessageMeta(el, msg) {
  el.dataset.state = msg.state ?? "done";
  if (msg.role !== "assistant") {
    el._meta.hidden = true;
    return;
  }
  const bits = [];
  if (msg.state === "streaming") bits.push(msg.content ? "writing…" : "reading your message…");
  if (msg.state === "stopped") bits.push("stopped");
  if (msg.state === "interrupted") bits.push("interrupted");
  if (msg.format === "json") bits.push(msg.schema ? "JSON (schema)" : "JSON");
  if (msg.finish === "length") bits.push(msg.format === "json" ? "JSON cut off at the max-tokens limit" : "hit the max-tokens limit");
  if (msg.usage) bits.push(`${msg.usage.completion_tokens} tokens`);
  if (msg.timings?.decode_tokens_per_second) bits.push(fmtRate(msg.timings.decode_tokens_per_second));
  if (msg.error) bits.push(`error: ${msg.error.title}`);
  if (msg.trimmed) bits.push(`${msg.trimmed} older messages left out (context full)`);
  el._meta.textContent = bits.join(" · ");
  el._meta.hidden = bits.length === 0;
  if (msg.state !== "streaming" && msg.role === "assistant" && !msg.content && !msg.error) el._body.textContent = "(no answer)";
  renderJsonBody(el, msg);
}

function renderMessages() {
  const chat = currentChat();
  ui.messages.replaceChildren(...chat.messages.map(messageElement));
  updateEmptyChat();
  scrollToBottom(true);
}

function updateEmptyChat() {
  const chat = currentChat();
  show(ui.emptyChat, chat.messages.length === 0 && app.dataset.engine === "ready");
  ui.emptyModel.textContent = current?.modelId ?? "the model";
}

function nearBottom() {
  const s = ui.main;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

function scrollToBottom(force) {
  if (force || nearBottom()) ui.main.scrollTop = ui.main.scrollHeight;
}

function renderChatList() {
  const items = chats
    .filter((c) => c.messages.length > 0 || c.id === currentChatId)
    .sort((a, b) => b.updated - a.updated)
    .map((chat) => {
      const li = document.createElement("li");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "chat-open";
      open.dataset.chatId = chat.id;
      if (chat.id === currentChatId) open.setAttribute("aria-current", "true");
      const title = document.createElement("span");
      title.className = "chat-title";
      title.textContent = chat.title;
      const when = document.createElement("span");
      when.className = "chat-when";
      when.textContent = fmtWhen(chat.updated);
      open.append(title, when);
      const del = document.createElement("button");
      del.type = "button";
      del.className = "chat-delete icon-button";
      del.dataset.deleteId = chat.id;
      del.setAttribute("aria-label", `Delete chat "${chat.title}"`);
      del.textContent = "×";
      li.append(open, del);
      return li;
    });
  ui.chatList.replaceChildren(...items);
}

async function switchChat(id) {
  if (id === currentChatId) return closeSidebar();
  await stopGenerating();
  currentChatId = id;
  saveChats();
  renderChatList();
  renderMessages();
  lastUsedTokens = null;
  updateFigures({});
  countContextTokens();
  closeSidebar();
  ui.prompt.focus();
}

async function newChat() {
  await stopGenerating();
  const chat = currentChat();
  if (chat.messages.length > 0) {
    const fresh = newChatObject();
    chats.unshift(fresh);
    currentChatId = fresh.id;
  }
  saveChats();
  renderChatList();
  renderMessages();
  lastUsedTokens = 0;
  updateFigures({});
  closeSidebar();
  if (!ui.prompt.disabled) ui.prompt.focus();
  announce("New chat started.");
}

async function deleteChat(id) {
  if (id === currentChatId) await stopGenerating();
  chats = chats.filter((c) => c.id !== id);
  if (id === currentChatId) {
    currentChatId = null;
    currentChat();
    renderMessages();
    lastUsedTokens = 0;
    updateFigures({});
  }
  saveChats();
  renderChatList();
  announce("Chat deleted.");
  ui.chatList.querySelector("button")?.focus();
}

// ---------------------------------------------------------------------------------------------
// Figures: prefill tok/s, decode tok/s, tokens used / context

let lastFigures = {};
function updateFigures({ prefill, decode, live } = {}) {
  if (prefill !== undefined) lastFigures.prefill = prefill;
  if (decode !== undefined) lastFigures.decode = decode;
  ui.figPrefill.textContent = fmtRate(lastFigures.prefill);
  ui.figDecode.textContent = fmtRate(lastFigures.decode) + (live && Number.isFinite(lastFigures.decode) ? " (live)" : "");
  const ctx = current?.info?.context;
  ui.figContext.textContent = ctx ? `${lastUsedTokens == null ? "?" : nf0.format(lastUsedTokens)} / ${nf0.format(ctx)} tokens` : "–";
}

/** How many tokens the current chat fills (the prompt the template makes of it); when idle. */
async function countContextTokens() {
  if (!engine || generating) return;
  const chat = currentChat();
  const msgs = historyOf(chat);
  if (msgs.length === 0) {
    lastUsedTokens = 0;
    return updateFigures({});
  }
  try {
    const text = await engine.applyChatTemplate(msgs);
    const ids = await engine.encode(text, { addSpecialTokens: false });
    if (!generating && chat === currentChat()) {
      lastUsedTokens = ids.length;
      updateFigures({});
    }
  } catch {
    // BUSY or a model without a chat template: the figure waits for the next answer.
  }
}

// ---------------------------------------------------------------------------------------------
// Chatting

/** The messages sent to the model: the system prompt, then the chat's turns (errors left out). */
function historyOf(chat, exclude) {
  const turns = chat.messages.filter((m) => m !== exclude && !m.error && m.content && (m.role === "user" || m.role === "assistant"));
  const sys = settings.system.trim();
  return [...(sys ? [{ role: "system", content: sys }] : []), ...turns.map((m) => ({ role: m.role, content: m.content }))];
}

/**
 * JSON mode's response_format: json_schema with the pasted schema, else json_object; null when off.
 * Throws a BAD_REQUEST-shaped error (option "jsonSchema") if the pasted schema is not JSON.
 */
function responseFormat() {
  if (!settings.json) return null;
  const src = settings.jsonSchema.trim();
  if (!src) return { type: "json_object" };
  const schema = parseSchema(src);
  if (schema.error) throw Object.assign(new Error(schema.error), { code: "BAD_REQUEST", option: "jsonSchema" });
  return { type: "json_schema", json_schema: { name: "reply", schema: schema.value, strict: true } };
}

/** {value} or {error} for a pasted JSON Schema (an object, or true/false). */
function parseSchema(src) {
  let value;
  try {
    value = JSON.parse(src);
  } catch (err) {
    return { error: `The JSON Schema is not valid JSON: ${err.message}.` };
  }
  if (value === null || Array.isArray(value) || (typeof value !== "object" && typeof value !== "boolean")) {
    return { error: "The JSON Schema must be a JSON object, such as {\"type\": \"object\", \"properties\": {…}}." };
  }
  return { value };
}

function showSchemaError() {
  const src = settings.jsonSchema.trim();
  const error = src ? parseSchema(src).error : null;
  ui.jsonSchemaError.textContent = error ?? "";
  ui.jsonSchemaError.hidden = !error;
  ui.jsonSchema.setAttribute("aria-invalid", String(!!error));
}

function setJsonMode(on) {
  settings.json = on;
  ui.jsonMode.checked = on;
  ui.jsonToggle.setAttribute("aria-pressed", String(on));
  app.dataset.json = String(on);
  saveSettings();
}

async function send() {
  const text = ui.prompt.value.trim();
  if (!text || !engine || generating || app.dataset.engine !== "ready") return;
  let format;
  try {
    format = responseFormat();
  } catch (err) {
    // The message stays in the box: fix the schema (or turn JSON mode off) and press Enter again.
    showNotice(err, { during: "chat" });
    return;
  }
  hideNotice();
  ui.prompt.value = "";
  autosize();
  const chat = currentChat();
  const user = { role: "user", content: text, time: Date.now() };
  chat.messages.push(user);
  if (chat.title === "New chat") chat.title = text.length > 48 ? `${text.slice(0, 47)}…` : text;
  chat.updated = Date.now();
  const reply = { role: "assistant", content: "", state: "streaming", time: Date.now() };
  if (format) Object.assign(reply, { format: "json", schema: format.type === "json_schema" });
  const history = historyOf(chat);
  chat.messages.push(reply);
  saveChats();
  renderChatList();
  updateEmptyChat();
  ui.messages.append(messageElement(user));
  const el = messageElement(reply);
  ui.messages.append(el);
  scrollToBottom(true);
  await generate(chat, history, reply, el, format);
}

async function generate(chat, history, reply, el, format) {
  generating = true;
  app.dataset.generating = "true";
  ui.messages.setAttribute("aria-busy", "true");
  updateSendButton();
  const opts = {
    stream: true,
    max_tokens: settings.maxTokens,
    temperature: settings.temperature,
    top_p: settings.topP,
  };
  // The engine constrains every token: the answer parses (and validates against the schema), or it
  // is cut by max_tokens. A schema it cannot honour is BAD_REQUEST before anything is generated.
  if (format) opts.response_format = format;
  let messages = history;
  let firstAt = 0;
  let pieces = 0;
  try {
    for (;;) {
      try {
        const stream = await engine.chat.completions.create({ ...opts, messages });
        for await (const chunk of stream) {
          const choice = chunk.choices[0];
          const delta = choice.delta?.content;
          if (delta) {
            const now = performance.now();
            if (!firstAt) {
              firstAt = now;
              updateMessageMeta(el, reply);
            }
            pieces++;
            reply.content += delta;
            el._text.append(delta);
            if (pieces > 2) updateFigures({ decode: ((pieces - 1) * 1000) / (now - firstAt), live: true });
            scrollToBottom(false);
            saveChats({ soon: true });
          }
          if (choice.finish_reason) {
            reply.finish = choice.finish_reason;
            reply.usage = chunk.usage;
            reply.timings = chunk.timings;
          }
        }
        break;
      } catch (err) {
        // The conversation no longer fits: leave the oldest turns out and try again.
        const turns = messages.filter((m) => m.role !== "system");
        if (err?.code === "CONTEXT_OVERFLOW" && !reply.content && turns.length > 1) {
          const sys = messages.filter((m) => m.role === "system");
          let rest = turns.slice(1);
          while (rest.length > 1 && rest[0].role !== "user") rest = rest.slice(1);
          reply.trimmed = (reply.trimmed ?? 0) + (turns.length - rest.length);
          messages = [...sys, ...rest];
          continue;
        }
        throw err;
      }
    }
    reply.state = reply.finish === "abort" ? "stopped" : "done";
    if (reply.usage) lastUsedTokens = reply.usage.total_tokens;
    if (reply.timings) {
      updateFigures({
        prefill: reply.timings.prefill_tokens_per_second || lastFigures.prefill,
        decode: reply.timings.decode_tokens_per_second || lastFigures.decode,
      });
    }
    announce(reply.state === "stopped" ? "Answer stopped." : "Answer complete.");
  } catch (err) {
    const d = describeError(err);
    reply.state = "error";
    reply.error = { code: err?.code ?? "INTERNAL", title: d.title };
    if (!reply.content) el._body.textContent = d.title;
    showNotice(err, { during: "chat" });
    if (err?.code === "DEVICE_LOST" || err?.code === "INTERNAL") {
      dropEngine();
      setEngineState("error");
    }
  } finally {
    generating = false;
    app.dataset.generating = "false";
    ui.messages.removeAttribute("aria-busy");
    chat.updated = Date.now();
    saveChats();
    updateMessageMeta(el, reply);
    updateFigures({});
    updateSendButton();
    if (document.activeElement === ui.stop || document.activeElement === document.body) ui.prompt.focus();
  }
}

function stop() {
  if (!generating || !engine) return;
  engine.abort();
  announce("Stopping…");
}

async function stopGenerating() {
  if (!generating || !engine) return;
  engine.abort();
  while (generating) await new Promise((r) => setTimeout(r, 30));
}

// ---------------------------------------------------------------------------------------------
// Loading a model

/** A model choice: {kind: "default"|"url"|"file", url?, files?, name}. */
function sourceName(source) {
  if (source.kind === "default") return DEFAULT_MODEL.name;
  if (source.kind === "file") return source.files.map((f) => f.name).join(" + ");
  try {
    const u = new URL(source.url);
    const segs = u.pathname.split("/").filter(Boolean);
    const last = decodeURIComponent(segs.at(-1) ?? u.host);
    return /^manifest\.json$/i.test(last) ? decodeURIComponent(segs.at(-2) ?? last) : last.replace(/\.gguf$/i, "");
  } catch {
    return source.url;
  }
}

function modelOf(source) {
  if (source.kind === "default") return DEFAULT_MODEL.url;
  if (source.kind === "url") return source.url;
  return source.files.length === 1 ? source.files[0] : source.files;
}

function dropEngine() {
  const e = engine;
  const w = worker;
  engine = null;
  worker = null;
  current = null;
  if (e) e.unload().catch(() => {}).finally(() => w?.terminate());
  else w?.terminate();
}

const PHASES = {
  manifest: "Contacting the server…",
  download: "Downloading (kept for offline use as it arrives)",
  cache: "Loading from this device's offline copy",
  read: "Reading the file",
  tokenizer: "Loading the tokenizer",
  finalize: "Preparing the model on the GPU…",
  ready: "Ready",
};

function onProgress(p) {
  if (!loading) return;
  const uncached = loading.cache === false && p.phase === "download" ? "Downloading (not kept offline)" : null;
  ui.loadPhase.textContent = uncached ?? PHASES[p.phase] ?? p.phase;
  const total = p.totalBytes || 0;
  if (total > 0 && p.phase !== "finalize" && p.phase !== "tokenizer") {
    ui.loadProgress.max = total;
    ui.loadProgress.value = Math.min(p.loadedBytes, total);
    loading.percent = Math.floor((100 * p.loadedBytes) / total);
    const bits = [`${fmtBytes(p.loadedBytes)} of ${fmtBytes(total)}`];
    if (p.bytesPerSecond > 0) bits.push(`${fmtBytes(p.bytesPerSecond)}/s`);
    if (Number.isFinite(p.etaSeconds) && p.etaSeconds > 0 && p.loadedBytes < total) bits.push(fmtEta(p.etaSeconds));
    if (p.shardCount > 1) bits.push(`part ${p.shard + 1} of ${p.shardCount}`);
    ui.loadFigures.textContent = bits.join(" · ");
  } else if (p.phase === "finalize" || p.phase === "tokenizer") {
    ui.loadProgress.removeAttribute("value"); // indeterminate
    loading.percent = 100;
  }
  app.dataset.loadPhase = p.phase;
  if (p.phase === "ready") loading.fromCache = !!p.fromCache;
  updateChip();
}

async function loadModel(source, { cache } = {}) {
  if (!llm) return;
  if (loading) cancelLoad();
  await stopGenerating();
  hideNotice();
  dropEngine();
  show(ui.welcome, false);
  show(ui.emptyChat, false);
  const name = sourceName(source);
  const controller = new AbortController();
  const w = new Worker(new URL("./engine-worker.js", import.meta.url), { type: "module", name: "webgpu-llm engine" });
  loading = { controller, worker: w, source, percent: null, cache };
  ui.loadHeading.textContent = `Loading ${name}`;
  ui.loadPhase.textContent = "Starting the engine…";
  ui.loadFigures.textContent = "\u00a0";
  ui.loadProgress.removeAttribute("value");
  show(ui.loadPanel, true);
  setEngineState("loading");
  announce(`Loading ${name}.`);

  if (source.kind !== "file" && cache !== false) navigator.storage?.persist?.().catch(() => {});
  const options = { model: modelOf(source), worker: w, onProgress, signal: controller.signal };
  if (settings.context) options.context = Number(settings.context);
  if (cache === false) options.cache = false;
  if (source.kind === "default") options.modelId = DEFAULT_MODEL.name;
  const t0 = performance.now();
  try {
    const e = await llm.createWorkerEngine(options);
    if (loading?.controller !== controller) {
      e.unload().finally(() => w.terminate());
      return;
    }
    engine = e;
    worker = w;
    current = {
      source,
      modelId: e.modelId,
      info: e.modelInfo,
      gpu: e.gpuInfo,
      seconds: (performance.now() - t0) / 1000,
      fromCache: !!loading.fromCache,
    };
    app.dataset.modelFromCache = String(current.fromCache);
    loading = null;
    if (source.kind !== "file") storage.set("model", { kind: source.kind, url: source.url });
    else storage.set("model", { kind: "file", name });
    show(ui.loadPanel, false);
    setEngineState("ready");
    updateModelSummary();
    lastUsedTokens = null;
    updateFigures({});
    updateEmptyChat();
    announce(`${current.modelId} is ready. Type a message.`);
    ui.prompt.focus();
    countContextTokens();
  } catch (err) {
    w.terminate();
    if (loading?.controller !== controller) return; // cancelled, or replaced by another load
    loading = null;
    show(ui.loadPanel, false);
    setEngineState(err?.code === "WEBGPU_UNAVAILABLE" ? "unsupported" : "error");
    if (err?.code === "WEBGPU_UNAVAILABLE") return showUnsupported(err.message);
    showWelcome();
    showNotice(err, { during: "load", source });
  }
}

/** Abandon the running load. Its worker gets a moment to answer ABORTED, then goes away either way. */
function cancelLoad() {
  if (!loading) return;
  const { controller, worker: w } = loading;
  loading = null;
  controller.abort();
  setTimeout(() => w.terminate(), 3000);
}

function onCancelClick() {
  cancelLoad();
  show(ui.loadPanel, false);
  setEngineState("none");
  showWelcome();
  announce("Loading cancelled.");
  ui.loadDefault.focus();
}

function updateModelSummary() {
  if (!current) {
    ui.modelSummary.textContent = "None loaded.";
    ui.forgetModel.hidden = true;
    return;
  }
  const i = current.info;
  const g = current.gpu ?? {};
  const bits = [
    `${current.modelId}`,
    `${i.architecture}, ${i.layers} layers`,
    `${fmtBytes(i.weightBytes)} weights + ${fmtBytes(i.kvCacheBytes)} context memory`,
    `context ${nf0.format(i.context)} tokens`,
    `GPU: ${adapterLabel || g.adapter || "WebGPU"}${g.shaderF16 ? ", f16" : ""}${g.subgroups ? ", subgroups" : ""}`,
    `loaded ${current.source.kind === "file" ? "from the file" : current.fromCache ? "from this device" : "from the network"} in ${nf1.format(current.seconds)} s`,
  ];
  ui.modelSummary.textContent = bits.join(" · ");
  ui.forgetModel.hidden = true;
  if (current.source.kind === "file") {
    ui.modelSummary.textContent += " · not kept offline";
    return;
  }
  // The load went on without the offline cache (storage full or refused): say why, with the sizes.
  const w = i.cacheWarning;
  if (w) {
    const sizes = Number.isFinite(w.neededBytes) && Number.isFinite(w.availableBytes)
      ? `: needs ${fmtBytes(w.neededBytes)}, ${fmtBytes(w.availableBytes)} free for this site`
      : "";
    ui.modelSummary.textContent += ` · not saved for offline use (${w.reason === "quota" ? `not enough storage${sizes}` : "the browser refused to store it"})`;
    return;
  }
  const shown = current;
  llm.isModelCached(modelOf(current.source)).then(
    (cached) => {
      if (current !== shown) return;
      ui.modelSummary.textContent += cached ? " · saved for offline use" : " · not saved for offline use";
      ui.forgetModel.hidden = !cached;
    },
    () => {},
  );
}

async function forgetModel() {
  if (!current || current.source.kind === "file") return;
  const model = modelOf(current.source);
  try {
    await llm.deleteCachedModel(model);
    announce("The offline copy was removed. The model stays loaded until you close the page.");
    ui.forgetModel.hidden = true;
  } catch (err) {
    showNotice(err, { during: "cache" });
  }
}

// ---------------------------------------------------------------------------------------------
// Errors: every code gets a plain-language title, what to do, and the package's own message.

function describeError(err, { during, source } = {}) {
  const code = err?.code ?? "INTERNAL";
  const msg = String(err?.message ?? err);
  const tips = [];
  const actions = [];
  let title;
  let body;
  switch (code) {
    case "WEBGPU_UNAVAILABLE":
      title = "WebGPU isn't available";
      body = "This browser can't give the page access to the graphics card.";
      break;
    case "FEATURE_MISSING":
      title = "Your graphics card lacks a feature this model needs";
      body = "The GPU or its driver does not offer everything this model uses.";
      tips.push("Try another model (a different quantization or architecture).", "Updating the graphics driver or the browser can help.");
      actions.push(["Choose another model", openModelDialog]);
      break;
    case "LIMIT_TOO_SMALL":
      title = "Your graphics card's limits are too small for this model";
      body = err.limit
        ? `The model needs ${err.limit} of at least ${fmtNumberOrBytes(err.needed)}; this GPU allows ${fmtNumberOrBytes(err.available)}.`
        : "A limit of this GPU is smaller than the model needs.";
      tips.push("Try a smaller model.", "A different browser may expose higher limits on the same GPU.");
      actions.push(["Choose another model", openModelDialog]);
      break;
    case "OUT_OF_MEMORY":
      title = "Not enough GPU memory for this model";
      body = err.neededBytes
        ? `It needs about ${fmtBytes(err.neededBytes)} of GPU memory (weights and context) and the GPU could not provide it.`
        : "The GPU could not provide the memory the model needs.";
      tips.push("Close other tabs or apps that use the GPU (games, video, other AI pages).", "Choose a shorter context under Advanced in the model picker.", "Try a smaller model.");
      if (during === "load" && source && settings.context !== "1024") {
        actions.push(["Retry with a 1,024-token context", () => {
          settings.context = "1024";
          ui.contextSize.value = "1024";
          saveSettings();
          loadModel(source);
        }]);
      }
      actions.push(["Choose another model", openModelDialog]);
      break;
    case "NETWORK":
      if (!navigator.onLine) {
        title = "You're offline";
        body = "This model isn't saved on this device yet, so it can't be loaded without a connection.";
        tips.push("Connect to the internet and load it once; after that it works offline.");
      } else if (err.reason === "cors") {
        title = "The model's server does not allow this site to download it (CORS)";
        body = `${err.url ?? "The model"} answered without CORS headers, so the browser withheld it.`;
        tips.push("Ask the host to send Access-Control-Allow-Origin (and for resumed downloads Access-Control-Allow-Headers: Range), or host the model on this site.");
      } else if (err.status === 404) {
        title = "Model not found (HTTP 404)";
        body = `There is no file at ${err.url ?? "that address"}.`;
        tips.push("Check the address: it must point at a .gguf file or a model package's manifest.json.");
      } else if (err.status) {
        title = `The server refused the download (HTTP ${err.status})`;
        body = `Downloading ${err.url ?? "the model"} failed.`;
        tips.push("Check the address, or try again later.");
      } else {
        title = "The model couldn't be downloaded";
        body = err.url ? `Could not fetch ${err.url}.` : "A download failed.";
        tips.push(
          "Check your connection and the address.",
          "Models on another site must be served with CORS (Access-Control-Allow-Origin), and this page's Content-Security-Policy (connect-src) must allow that site.",
          "An interrupted download resumes where it stopped when you load it again.",
        );
      }
      if (source) actions.push(["Try again", () => loadModel(source)]);
      actions.push(["Choose another model", openModelDialog]);
      break;
    case "BAD_MODEL":
      title = "This isn't a model the app can run";
      body = "The file is not a supported GGUF or model package, or it arrived damaged.";
      tips.push("Supported: Llama (Llama 3.x, SmolLM2, Mistral), Qwen2/2.5, Qwen3 and Phi-3 GGUFs in F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K.");
      actions.push(["Choose another model", openModelDialog]);
      break;
    case "QUOTA":
      title = "Not enough storage to keep this model offline";
      body = err.neededBytes
        ? `Keeping it needs ${fmtBytes(err.neededBytes)}${Number.isFinite(err.availableBytes) ? `; ${fmtBytes(err.availableBytes)} are free for this site` : ""}.`
        : "The browser's storage for this site is full.";
      tips.push("Free some disk space, or remove other sites' data in the browser settings.");
      if (source) actions.push(["Load without keeping it offline", () => loadModel(source, { cache: false })]);
      break;
    case "DEVICE_LOST":
      title = "The graphics card was reset";
      body = "The GPU stopped the model (a driver reset or memory pressure). The chat is kept.";
      actions.push(["Load the model again", () => reloadLast()]);
      break;
    case "CONTEXT_OVERFLOW":
      title = "This message doesn't fit the model's context";
      body = err.context ? `The prompt has ${err.promptTokens} tokens; the context holds ${err.context}.` : "The prompt is longer than the context.";
      tips.push("Start a new chat, or send a shorter message.");
      actions.push(["New chat", () => newChat()]);
      break;
    case "BUSY":
      title = "Still answering";
      body = "Wait for the answer to finish, or stop it first.";
      break;
    case "ABORTED":
      title = "Cancelled";
      body = "";
      break;
    case "BAD_REQUEST":
      // The engine names the option "json_schema"; the app's own check of a pasted schema "jsonSchema".
      if (["json_schema", "jsonSchema", "response_format"].includes(err.option)) {
        title = "JSON mode can't use this schema";
        body = msg;
        tips.push("Fix the JSON Schema under Answer settings, or clear it to get any JSON object.", "Or turn JSON mode off for a plain answer.");
        actions.push(["Edit the schema", () => editSchema()]);
        actions.push(["Turn JSON mode off", () => setJsonMode(false)]);
      } else {
        title = "The request was refused";
        body = msg;
      }
      break;
    default:
      title = during === "load" ? "The model couldn't be loaded" : "Something went wrong";
      body = "The engine failed unexpectedly.";
      tips.push("Reload the page and try again. If it keeps happening, the details below help a bug report.");
      if (during === "chat") actions.push(["Load the model again", () => reloadLast()]);
  }
  return { code, title, body, tips, actions, message: msg };
}

function editSchema() {
  if (narrow.matches) openSidebar();
  ui.jsonSchema.focus();
}

function fmtNumberOrBytes(n) {
  return Number.isFinite(n) ? (n >= 1 << 20 ? fmtBytes(n) : nf0.format(n)) : "?";
}

function showNotice(err, ctx = {}) {
  const d = describeError(err, ctx);
  ui.notice.dataset.code = d.code;
  ui.noticeHeading.textContent = d.title;
  ui.noticeBody.textContent = d.body;
  show(ui.noticeBody, !!d.body);
  ui.noticeTips.replaceChildren(...d.tips.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
  show(ui.noticeTips, d.tips.length > 0);
  ui.noticeCode.textContent = d.code;
  ui.noticeMessage.textContent = d.message;
  const buttons = d.actions.map(([label, fn], i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = i === 0 ? "button primary" : "button";
    b.textContent = label;
    b.addEventListener("click", () => {
      hideNotice();
      fn();
    });
    return b;
  });
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.className = "button ghost";
  dismiss.textContent = "Dismiss";
  dismiss.addEventListener("click", () => {
    hideNotice();
    (ui.prompt.disabled ? ui.loadDefault : ui.prompt).focus();
  });
  ui.noticeActions.replaceChildren(...buttons, dismiss);
  show(ui.notice, true);
  ui.main.scrollTop = 0;
  if (ctx.during !== "chat") ui.noticeHeading.focus();
  else ui.notice.scrollIntoView({ block: "nearest" });
}

function hideNotice() {
  show(ui.notice, false);
}

function showUnsupported(reason) {
  show(ui.welcome, false);
  show(ui.loadPanel, false);
  ui.unsupportedReason.textContent = reason;
  show(ui.unsupported, true);
  setEngineState("unsupported");
  ui.unsupported.focus();
}

async function showWelcome() {
  if (app.dataset.engine === "unsupported") return;
  const last = storage.get("model", null);
  let label = `Load ${DEFAULT_MODEL.name}`;
  let sub = `${DEFAULT_MODEL.size} download, kept for offline use`;
  ui.loadDefault.dataset.kind = "default";
  if (last?.kind === "url" && last.url) {
    label = `Load ${sourceName(last)}`;
    sub = "the model you used last time";
    ui.loadDefault.dataset.kind = "url";
  }
  ui.loadDefaultLabel.textContent = label;
  ui.loadDefaultSub.textContent = sub;
  ui.welcomeNote.textContent =
    last?.kind === "file"
      ? `Last time you used the file ${last.name}: choose it again with "Another model or a file…", or drop it on this page.`
      : "You can also drop a .gguf file anywhere on this page.";
  show(ui.welcome, true);
  try {
    const src = last?.kind === "url" ? last.url : DEFAULT_MODEL.url;
    if (llm && (await llm.isModelCached(src))) ui.loadDefaultSub.textContent = "saved on this device: starts without downloading";
  } catch {}
}

function reloadLast() {
  const last = storage.get("model", null);
  if (last?.kind === "url") return loadModel({ kind: "url", url: last.url });
  if (last?.kind === "file") return openModelDialog("file");
  return loadModel({ kind: "default" });
}

// ---------------------------------------------------------------------------------------------
// Model picker dialog, file input, drag and drop

async function openModelDialog(preselect) {
  closeSidebar();
  ui.modelFormError.hidden = true;
  ui.contextSize.value = settings.context ?? "";
  ui.dialogDefaultName.textContent = DEFAULT_MODEL.name;
  ui.dialogDefaultDetail.textContent = DEFAULT_MODEL.detail;
  const last = storage.get("model", null);
  if (last?.kind === "url" && !ui.modelUrl.value) ui.modelUrl.value = last.url;
  const kind = typeof preselect === "string" ? preselect : current?.source.kind ?? (last?.kind === "url" ? "url" : "default");
  const radio = ui.modelForm.querySelector(`input[name=source][value="${kind}"]`);
  if (radio) radio.checked = true;
  if (!ui.dialog.open) ui.dialog.showModal();
  (kind === "url" ? ui.modelUrl : kind === "file" ? ui.modelFile : radio)?.focus();
  ui.dialogDefaultCached.hidden = true;
  try {
    ui.dialogDefaultCached.hidden = !(llm && (await llm.isModelCached(DEFAULT_MODEL.url)));
  } catch {}
}

function selectedSource() {
  return ui.modelForm.querySelector("input[name=source]:checked")?.value ?? "default";
}

function formError(text, focusEl) {
  ui.modelFormError.textContent = text;
  ui.modelFormError.hidden = false;
  focusEl?.focus();
}

ui.modelForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const kind = selectedSource();
  let source;
  if (kind === "url") {
    const raw = ui.modelUrl.value.trim();
    if (!raw) return formError("Enter the model's URL (a .gguf file or a manifest.json).", ui.modelUrl);
    let url;
    try {
      url = new URL(raw, location.href);
    } catch {
      return formError(`"${raw}" is not a valid URL.`, ui.modelUrl);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") return formError("The URL must start with https:// (or http://).", ui.modelUrl);
    source = { kind: "url", url: url.href };
  } else if (kind === "file") {
    const files = [...ui.modelFile.files];
    if (files.length === 0) return formError("Choose a .gguf file first.", ui.modelFile);
    source = fileSource(files);
  } else {
    source = { kind: "default" };
  }
  settings.context = ui.contextSize.value;
  saveSettings();
  ui.dialog.close();
  loadModel(source);
});

ui.modelCancel.addEventListener("click", () => ui.dialog.close());
ui.dialog.addEventListener("close", () => {
  if (app.dataset.engine === "ready") ui.prompt.focus();
});
ui.modelUrl.addEventListener("input", () => (ui.modelForm.querySelector('input[value="url"]').checked = true));
ui.modelFile.addEventListener("change", () => (ui.modelForm.querySelector('input[value="file"]').checked = true));

function fileSource(files) {
  // Parts of a split GGUF (…-00001-of-00003.gguf) are passed in name order.
  const sorted = [...files].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  return { kind: "file", files: sorted };
}

function hasFiles(ev) {
  return [...(ev.dataTransfer?.types ?? [])].includes("Files");
}

let dragDepth = 0;
window.addEventListener("dragenter", (ev) => {
  if (!hasFiles(ev) || app.dataset.engine === "unsupported") return;
  dragDepth++;
  ui.dropOverlay.hidden = false;
});
window.addEventListener("dragleave", (ev) => {
  if (!hasFiles(ev)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.dropOverlay.hidden = true;
});
window.addEventListener("dragover", (ev) => {
  if (!hasFiles(ev)) return;
  ev.preventDefault();
  ev.dataTransfer.dropEffect = "copy";
});
window.addEventListener("drop", (ev) => {
  if (!hasFiles(ev)) return;
  ev.preventDefault();
  dragDepth = 0;
  ui.dropOverlay.hidden = true;
  const files = [...ev.dataTransfer.files].filter((f) => /\.gguf$/i.test(f.name));
  if (files.length === 0) {
    showNotice({ code: "BAD_MODEL", message: `dropped: ${[...ev.dataTransfer.files].map((f) => f.name).join(", ") || "nothing"} (not a .gguf file)` });
    return;
  }
  if (ui.dialog.open) ui.dialog.close();
  loadModel(fileSource(files));
});

// ---------------------------------------------------------------------------------------------
// Sidebar (a drawer on narrow screens), settings, composer, keyboard

const narrow = matchMedia("(max-width: 899px)");

function openSidebar() {
  app.classList.add("sidebar-open");
  ui.menuButton.setAttribute("aria-expanded", "true");
  ui.scrim.hidden = false;
  ui.sidebar.querySelector("button, input, textarea")?.focus();
}

function closeSidebar() {
  if (!app.classList.contains("sidebar-open")) return;
  app.classList.remove("sidebar-open");
  ui.menuButton.setAttribute("aria-expanded", "false");
  ui.scrim.hidden = true;
  if (narrow.matches && ui.sidebar.contains(document.activeElement)) ui.menuButton.focus();
}

function syncSidebarMode() {
  // On narrow screens the closed drawer is taken out of the tab order.
  ui.sidebar.inert = narrow.matches && !app.classList.contains("sidebar-open");
}
new MutationObserver(syncSidebarMode).observe(app, { attributes: true, attributeFilter: ["class"] });
narrow.addEventListener("change", () => {
  if (!narrow.matches) closeSidebar();
  syncSidebarMode();
});
syncSidebarMode();

ui.menuButton.addEventListener("click", () => (app.classList.contains("sidebar-open") ? closeSidebar() : openSidebar()));
ui.scrim.addEventListener("click", closeSidebar);

function bindRange(input, out, key, digits) {
  const render = () => (out.textContent = Number(settings[key]).toFixed(digits));
  input.value = settings[key];
  render();
  input.addEventListener("input", () => {
    settings[key] = Number(input.value);
    render();
    saveSettings();
  });
}
bindRange(ui.temperature, ui.temperatureOut, "temperature", 2);
bindRange(ui.topP, ui.topPOut, "topP", 2);
ui.maxTokens.value = settings.maxTokens;
ui.maxTokens.addEventListener("change", () => {
  const n = Math.round(Number(ui.maxTokens.value));
  settings.maxTokens = Number.isFinite(n) && n >= 1 ? Math.min(n, 8192) : DEFAULT_SETTINGS.maxTokens;
  ui.maxTokens.value = settings.maxTokens;
  saveSettings();
});
ui.systemPrompt.value = settings.system;
ui.systemPrompt.addEventListener("input", () => {
  settings.system = ui.systemPrompt.value;
  saveSettings();
});
setJsonMode(!!settings.json);
ui.jsonMode.addEventListener("change", () => setJsonMode(ui.jsonMode.checked));
ui.jsonToggle.addEventListener("click", () => {
  setJsonMode(!settings.json);
  announce(settings.json ? "JSON mode on: answers are JSON." : "JSON mode off.");
});
ui.jsonSchema.value = settings.jsonSchema;
showSchemaError();
ui.jsonSchema.addEventListener("input", () => {
  settings.jsonSchema = ui.jsonSchema.value;
  saveSettings();
  showSchemaError();
});

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 200)}px`;
}

ui.prompt.addEventListener("input", () => {
  autosize();
  updateSendButton();
});
ui.prompt.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
    ev.preventDefault();
    send();
  }
});
ui.composer.addEventListener("submit", (ev) => {
  ev.preventDefault();
  send();
});
ui.stop.addEventListener("click", () => {
  stop();
  ui.prompt.focus();
});
document.addEventListener("keydown", (ev) => {
  if (ev.key !== "Escape" || ui.dialog.open) return;
  if (generating) {
    ev.preventDefault();
    stop();
  } else if (app.classList.contains("sidebar-open")) {
    closeSidebar();
  }
});

ui.newChatTop.addEventListener("click", newChat);
ui.newChatSide.addEventListener("click", newChat);
ui.chatList.addEventListener("click", (ev) => {
  const del = ev.target.closest("[data-delete-id]");
  if (del) return deleteChat(del.dataset.deleteId);
  const open = ev.target.closest("[data-chat-id]");
  if (open) switchChat(open.dataset.chatId);
});
ui.modelChip.addEventListener("click", () => openModelDialog());
ui.changeModel.addEventListener("click", () => openModelDialog());
ui.chooseModel.addEventListener("click", () => openModelDialog());
ui.forgetModel.addEventListener("click", forgetModel);
ui.loadDefault.addEventListener("click", () => reloadLastOrDefault());
ui.loadCancel.addEventListener("click", onCancelClick);

function reloadLastOrDefault() {
  const last = storage.get("model", null);
  loadModel(ui.loadDefault.dataset.kind === "url" && last?.url ? { kind: "url", url: last.url } : { kind: "default" });
}

function updateNetwork() {
  ui.netChip.hidden = navigator.onLine;
}
window.addEventListener("online", updateNetwork);
window.addEventListener("offline", updateNetwork);

// ---------------------------------------------------------------------------------------------
// Start

async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register(`sw.js?pkg=${encodeURIComponent(PKG_URL)}`, { scope: "./" });
  } catch (err) {
    console.warn("service worker not registered (the app will not work offline):", err);
  }
}

async function start() {
  updateNetwork();
  currentChat();
  renderChatList();
  renderMessages();
  updateFigures({});
  registerServiceWorker();

  if (!navigator.gpu) {
    return showUnsupported(
      window.isSecureContext === false
        ? "WebGPU needs a secure page: open this app over https:// or from localhost / 127.0.0.1."
        : "This browser has no WebGPU (navigator.gpu is missing). Use one of the browsers below, or turn WebGPU on.",
    );
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch {}
  if (!adapter) {
    return showUnsupported(
      "This browser supports WebGPU but gave no graphics adapter: the GPU may be blocked for its driver, or hardware acceleration is turned off.",
    );
  }
  const info = adapter.info ?? {};
  adapterLabel = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ");
  adapter = null;

  try {
    llm = await import(new URL("index.js", PKG_URL).href);
  } catch (err) {
    setEngineState("error");
    showNotice(
      { code: "INTERNAL", message: `importing ${new URL("index.js", PKG_URL).href} failed: ${err.message}` },
      { during: "start" },
    );
    ui.noticeHeading.textContent = navigator.onLine ? "The app's engine could not be loaded" : "Open the app once while online";
    ui.noticeBody.textContent = navigator.onLine
      ? "The webgpu-llm package's files were not found next to the app (is pkg/wasm built? run scripts/build-pkg.sh)."
      : "The app keeps its files for offline use after its first visit with a connection.";
    return;
  }

  setEngineState("none");
  const last = storage.get("model", null);
  if (last && last.kind !== "file") {
    const src = last.kind === "url" ? { kind: "url", url: last.url } : { kind: "default" };
    let cached = false;
    try {
      cached = await llm.isModelCached(modelOf(src));
    } catch {}
    if (cached) {
      app.dataset.ready = "true";
      return loadModel(src); // saved on this device: start at once, also offline
    }
  }
  await showWelcome();
  app.dataset.ready = "true";
}

start().finally(() => (app.dataset.ready = "true"));
