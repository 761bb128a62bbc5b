// The chat app (www/app/) in headless Chromium with SwiftShader WebGPU, driven by playwright-core and
// served by scripts/serve.mjs from the repository root. Needs pkg/wasm/ built (scripts/build-pkg.sh)
// and the default model in models/ (scripts/fetch-model.sh).
//
//   node tests/browser/app.mjs [--screenshots DIR] [--keep] [--verbose]
//
// Steps (one PASS/FAIL line each; a failed step skips the ones that need it; exit status 1 on any
// failure):
//   welcome     a fresh profile shows the welcome screen; the service worker installs and activates
//   no-webgpu   a page without navigator.gpu shows the "no WebGPU" explanation (browsers and flags)
//   bad-url     a model URL that does not exist shows a readable error (title, the URL, HTTP 404)
//   load        the default SmolLM2 GGUF loads in the worker, with the progress panel on the way
//   chat        Shift+Enter adds a line; Enter sends a prompt; the answer's text grows over time (streamed), then completes
//               with prefill/decode tok/s and tokens used / context shown
//   stop        Escape stops an answer mid-way: it ends as "stopped" and grows no further
//   json-mode   (new chat) the { } JSON button turns JSON mode on (kept in the settings): a pasted schema
//               that is not JSON is flagged at the field and refused at send, one the engine cannot honour
//               (an unknown format) is refused with the engine's reason, naming it; then with no schema the
//               reply (response_format json_object, constrained, so even a 135M model's reply parses) is
//               pretty-printed JSON in a code block; off again, the next reply is plain text
//   error-states  out of memory, a too-small limit, a missing feature and a full quota (a stand-in
//               engine worker reports them) each show their own explanation and actions
//   narrow      390 px wide: no sideways scroll, the drawer opens from the menu and Escape closes it
//   offline     the server is shut down and the browser set offline; a reload restores the chat, the
//               model loads from the package's cache, and a new chat streams an answer
//   file        (still offline) a GGUF picked with <input type=file> loads in the worker
// Screenshots (desktop 1280×800 and narrow 390×844) go to target/screenshots/ (or --screenshots).
// Environment: CHROMIUM (default /usr/lib/chromium/chromium), BROWSER_TEST_TMP (parent of the temp
// profile, default os.tmpdir()).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../scripts/serve.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/lib/chromium/chromium";
const argv = process.argv.slice(2);
const optArg = (name) => {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return argv[i].includes("=") ? argv[i].split("=").slice(1).join("=") : argv[i + 1];
};
const SHOTS = path.resolve(optArg("--screenshots") ?? path.join(REPO, "target/screenshots"));
const KEEP = argv.includes("--keep");
const VERBOSE = argv.includes("--verbose");

const DESKTOP = { width: 1280, height: 800 };
const NARROW = { width: 390, height: 844 };
const CHAT_TOKENS = 8; // SwiftShader: ≈ 5 tok/s prefill, ≈ 3 tok/s decode
const STOP_TOKENS = 48; // long enough that only Escape can end it early
const JSON_TOKENS = 40; // a short JSON object from SmolLM2 fits (the engine ends right after the value)

const t0 = Date.now();
const secs = (ms) => (ms / 1000).toFixed(1);
const log = (...a) => console.log(`[${secs(Date.now() - t0).padStart(6)} s]`, ...a);

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}

for (const f of [path.join(REPO, "pkg/wasm/webgpu_llm.js"), path.join(REPO, "models/SmolLM2-135M-Instruct.Q4_1.gguf")]) {
  if (!fs.existsSync(f)) {
    console.log(`FAIL setup: ${path.relative(REPO, f)} is missing (scripts/build-pkg.sh, scripts/fetch-model.sh)`);
    process.exit(1);
  }
}

fs.mkdirSync(SHOTS, { recursive: true });
const tmp = fs.mkdtempSync(path.join(process.env.BROWSER_TEST_TMP ?? os.tmpdir(), "webgpu-llm-app-"));
const results = [];
const consoleLines = [];
const shots = [];

let server = await serve({ root: REPO, port: 0 });
const APP = server.appUrl;
log(`serving ${REPO} at ${server.origin}; app ${APP}`);

const context = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
  executablePath: CHROMIUM,
  headless: true,
  viewport: DESKTOP,
  args: [
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
  ],
});

function watch(page, label) {
  page.on("console", (m) => {
    const line = `[${label} console.${m.type()}] ${m.text()}`;
    consoleLines.push(line);
    if (VERBOSE) console.log(line);
  });
  page.on("pageerror", (e) => {
    const line = `[${label} pageerror] ${e.message}`;
    consoleLines.push(line);
    if (VERBOSE) console.log(line);
  });
  return page;
}

async function shot(page, name, viewport) {
  if (viewport) await page.setViewportSize(viewport);
  await page.waitForTimeout(250); // layout after a resize
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  shots.push(path.relative(REPO, file));
}

const engineState = (page) => page.evaluate(() => document.getElementById("app").dataset.engine);

/** Wait until the engine state is one of `states`; returns it. */
async function waitEngine(page, states, timeout) {
  await page.waitForFunction((s) => s.includes(document.getElementById("app").dataset.engine), states, { timeout, polling: 100 });
  return await engineState(page);
}

async function setSetting(page, id, value) {
  await page.evaluate(
    ([id, value]) => {
      const el = document.getElementById(id);
      el.value = String(value);
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
    },
    [id, value],
  );
}

/**
 * Type `text` and press Enter; with `stop`, press Escape (a real key press) once the answer's first
 * text is on screen. Samples the last answer's text until it is no longer streaming.
 */
async function chat(page, text, { stop = false } = {}) {
  await page.fill("#prompt", text);
  const sent = Date.now();
  await page.press("#prompt", "Enter");
  let escAt = null;
  if (stop) {
    await page.waitForFunction(
      () => {
        const el = [...document.querySelectorAll("#messages .msg.assistant")].at(-1);
        return el?.dataset.state !== "streaming" || el.querySelector(".body").textContent.length > 0;
      },
      null,
      { timeout: 120_000, polling: 30 },
    );
    await page.keyboard.press("Escape");
    escAt = Date.now() - sent;
  }
  const r = await page.evaluate(
    async ({ timeoutMs }) => {
      const t0 = performance.now();
      const last = () => [...document.querySelectorAll("#messages .msg.assistant")].at(-1);
      const samples = [];
      while (performance.now() - t0 < timeoutMs) {
        const el = last();
        const state = el?.dataset.state;
        const len = el?.querySelector(".body").textContent.length ?? 0;
        if (state === "streaming" && len > 0 && samples.at(-1)?.len !== len) samples.push({ t: Math.round(performance.now() - t0), len });
        if (el && state !== "streaming") {
          const stored = JSON.parse(localStorage.getItem("webgpu-llm-app:chats") ?? "[]");
          const cur = JSON.parse(localStorage.getItem("webgpu-llm-app:current") ?? "null");
          const msg = stored.find((c) => c.id === cur)?.messages.at(-1);
          return {
            state,
            text: el.querySelector(".body").textContent,
            meta: el.querySelector(".meta").textContent,
            samples,
            doneAt: Math.round(performance.now() - t0),
            usage: msg?.usage ?? null,
            timings: msg?.timings ?? null,
            figures: {
              prefill: document.getElementById("fig-prefill").textContent,
              decode: document.getElementById("fig-decode").textContent,
              context: document.getElementById("fig-context").textContent,
            },
            notice: document.getElementById("notice").hidden ? null : document.getElementById("notice").innerText,
          };
        }
        await new Promise((r) => setTimeout(r, 40));
      }
      return { state: "timeout", samples, text: last()?.querySelector(".body").textContent };
    },
    { timeoutMs: 120_000 },
  );
  const offset = Date.now() - sent - (r.doneAt ?? 0); // page clock → time since Enter (approximately)
  return { ...r, escAt, doneAt: r.doneAt + Math.max(0, offset), samples: r.samples.map((x) => ({ ...x, t: x.t + Math.max(0, offset) })) };
}

let blocked = null; // the failed step that later steps need
async function step(name, needs, fn) {
  if (needs && blocked) {
    results.push({ name, ok: false, skipped: true });
    console.log(`SKIP ${name}: needs ${blocked}`);
    return;
  }
  const start = Date.now();
  try {
    const detail = await fn();
    results.push({ name, ok: true });
    console.log(`PASS ${name} (${secs(Date.now() - start)} s)${detail ? `: ${detail}` : ""}`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name} (${secs(Date.now() - start)} s): ${err instanceof Failure ? err.message : err.stack}`);
    if (needs !== false) blocked ??= name;
  }
}

const page = watch(await context.newPage(), "app");

await step("welcome", true, async () => {
  await page.goto(APP);
  await page.waitForFunction(() => document.getElementById("app").dataset.ready === "true", null, { timeout: 30_000 });
  const state = await engineState(page);
  check(state === "none", `engine state ${state}, expected "none" (welcome) on a fresh profile`);
  check(await page.isVisible("#welcome"), "the welcome card is not visible");
  const label = await page.textContent("#load-default");
  check(/SmolLM2/.test(label), `the load button says ${JSON.stringify(label)}`);
  const sw = await page.evaluate(async () => {
    const reg = await Promise.race([navigator.serviceWorker.ready, new Promise((r) => setTimeout(() => r(null), 30_000))]);
    return reg ? { active: reg.active?.state, scope: reg.scope } : null;
  });
  check(sw?.active === "activated" || sw?.active === "activating", `service worker not active: ${JSON.stringify(sw)}`);
  const cached = await page.evaluate(async () => {
    const names = await caches.keys();
    const shell = names.find((n) => n.startsWith("webgpu-llm-app-shell-"));
    const keys = shell ? (await (await caches.open(shell)).keys()).map((r) => new URL(r.url).pathname) : [];
    return { shell, keys };
  });
  check(cached.keys.some((k) => k.endsWith("/wasm/webgpu_llm_bg.wasm")), `the wasm is not in the app cache: ${JSON.stringify(cached)}`);
  check(cached.keys.some((k) => k.endsWith("/src/worker.js")), "the package's worker is not in the app cache");
  await shot(page, "01-welcome-desktop");
  await shot(page, "01-welcome-narrow", NARROW);
  await page.setViewportSize(DESKTOP);
  return `service worker ${sw.active} (scope ${new URL(sw.scope).pathname}); ${cached.keys.length} files precached in ${cached.shell}`;
});

await step("no-webgpu", false, async () => {
  const p = watch(await context.newPage(), "no-gpu");
  await p.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined, configurable: true });
  });
  await p.goto(APP);
  await p.waitForFunction(() => document.getElementById("app").dataset.engine === "unsupported", null, { timeout: 20_000 });
  const text = await p.innerText("#unsupported");
  check(/Chrome or Edge 113/.test(text) && /enable-unsafe-webgpu/.test(text) && /Safari/.test(text), `the explanation lacks browsers/flags: ${text.slice(0, 200)}`);
  check(await p.isDisabled("#prompt"), "the message box is enabled without WebGPU");
  await shot(p, "02-no-webgpu-desktop");
  await shot(p, "02-no-webgpu-narrow", NARROW);
  await p.close();
  return "explains browsers and flags; composer disabled";
});

await step("bad-url", false, async () => {
  await page.click("#choose-model");
  await page.waitForSelector("#model-dialog[open]");
  await shot(page, "03-model-picker-desktop");
  await page.check('input[name=source][value="url"]');
  await page.fill("#model-url", "/models/no-such-model.gguf");
  await page.click("#model-load");
  const state = await waitEngine(page, ["error", "ready"], 30_000);
  check(state === "error", `engine state ${state} after a bad URL`);
  const notice = await page.innerText("#notice");
  const title = await page.textContent("#notice-heading");
  check(/not found/i.test(title) && /404/.test(title), `error title ${JSON.stringify(title)}`);
  check(notice.includes("/models/no-such-model.gguf"), "the error does not name the URL");
  check(!/\bat \S+:\d+:\d+/.test(notice), "the error shows a stack trace");
  const focused = await page.evaluate(() => document.activeElement?.id);
  check(focused === "notice-heading", `focus is on ${focused}, not the error`);
  await shot(page, "04-bad-url-desktop");
  await page.click("#notice-actions button:last-child"); // Dismiss
  return JSON.stringify(title);
});

await step("load", true, async () => {
  await page.click("#load-default");
  let progressShot = false;
  try {
    await page.waitForFunction(() => ["download", "cache"].includes(document.getElementById("app").dataset.loadPhase), null, { timeout: 20_000, polling: 50 });
    await page.waitForFunction(() => /MB\/s/.test(document.getElementById("load-figures").textContent), null, { timeout: 5_000, polling: 50 });
    await shot(page, "05-loading-desktop");
    progressShot = true;
  } catch {}
  const figures = await page.textContent("#load-figures");
  const state = await waitEngine(page, ["ready", "error"], 180_000);
  if (state !== "ready") throw new Failure(`load failed: ${await page.innerText("#notice")}`);
  const chip = await page.textContent("#model-chip-text");
  check(/SmolLM2/.test(chip), `model chip says ${JSON.stringify(chip)}`);
  const focused = await page.evaluate(() => document.activeElement?.id);
  check(focused === "prompt", `focus is on ${focused} after loading, not the message box`);
  const workers = page.workers().map((w) => new URL(w.url()).pathname);
  check(workers.some((w) => w.endsWith("/www/app/engine-worker.js")), `no engine worker: ${workers}`);
  return `${chip}; progress ${progressShot ? `"${figures.trim()}"` : "(too quick to capture)"}; worker ${workers.join(", ")}`;
});

await step("chat", true, async () => {
  await setSetting(page, "max-tokens", CHAT_TOKENS);
  await setSetting(page, "temperature", 0);
  // Shift+Enter is a new line, not a send.
  await page.fill("#prompt", "line one");
  await page.press("#prompt", "Shift+Enter");
  const typed = await page.inputValue("#prompt");
  const sentEarly = await page.evaluate(() => document.querySelectorAll("#messages .msg").length);
  check(typed === "line one\n" && sentEarly === 0, `Shift+Enter: value ${JSON.stringify(typed)}, ${sentEarly} messages`);
  const r = await chat(page, "What is the capital of France?");
  check(r.state === "done", `answer ended as ${r.state}: ${JSON.stringify(r.text)} ${r.notice ?? ""}`);
  check(r.text.trim().length > 0, "empty answer");
  const grew = r.samples.length >= 2 && r.samples.every((s, i) => i === 0 || s.len > r.samples[i - 1].len);
  check(grew, `the text did not grow while streaming: ${JSON.stringify(r.samples)}`);
  check(r.samples[0].t < r.doneAt - 300, `the first text appeared only at the end (${r.samples[0].t} of ${r.doneAt} ms)`);
  check(/tok\/s/.test(r.figures.prefill) && /tok\/s/.test(r.figures.decode), `figures ${JSON.stringify(r.figures)}`);
  check(/^\d[\d,.\s]* \/ [\d,.\s]+ tokens$/.test(r.figures.context), `context figure ${JSON.stringify(r.figures.context)}`);
  await shot(page, "06-chat-desktop");
  return `${JSON.stringify(r.text)} in ${r.samples.length} visible steps (first at ${r.samples[0].t} ms, done at ${r.doneAt} ms); prefill ${r.figures.prefill}, decode ${r.figures.decode}, ${r.figures.context}`;
});

await step("stop", true, async () => {
  await setSetting(page, "max-tokens", STOP_TOKENS);
  const r = await chat(page, "Tell me a long story about a dragon.", { stop: true });
  check(r.escAt !== null, "the answer never started streaming");
  check(r.state === "stopped", `answer ended as ${r.state}, not "stopped"`);
  check(/stopped/.test(r.meta), `the answer's note says ${JSON.stringify(r.meta)}`);
  const tokens = r.usage?.completion_tokens;
  check(tokens !== undefined && tokens < STOP_TOKENS, `${tokens} of ${STOP_TOKENS} tokens generated: not stopped early`);
  const len = r.text.length;
  await page.waitForTimeout(1500);
  const later = await page.evaluate(() => [...document.querySelectorAll("#messages .msg.assistant")].at(-1).querySelector(".body").textContent.length);
  check(later === len, `the text grew after stopping (${len} → ${later})`);
  check(await page.isVisible("#send") && !(await page.isVisible("#stop")), "Send/Stop buttons did not switch back");
  return `Escape at ${r.escAt} ms, stopped at ${r.doneAt} ms after ${tokens} tokens: ${JSON.stringify(r.text)}`;
});

await step("json-mode", true, async () => {
  await page.click("#new-chat-top");
  await setSetting(page, "max-tokens", JSON_TOKENS);
  await page.click("#json-toggle");
  const on = await page.evaluate(() => ({
    pressed: document.getElementById("json-toggle").getAttribute("aria-pressed"),
    checked: document.getElementById("json-mode").checked,
    stored: JSON.parse(localStorage.getItem("webgpu-llm-app:settings")).json,
  }));
  check(on.pressed === "true" && on.checked && on.stored === true, `JSON mode not on after the button: ${JSON.stringify(on)}`);

  // A schema that is not JSON: flagged at the field; Enter is refused with a notice, the text stays.
  await page.fill("#json-schema", '{"type": "object",');
  check(/not valid JSON/.test(await page.textContent("#json-schema-error")) && (await page.isVisible("#json-schema-error")), "no error at the schema field");
  await page.fill("#prompt", "Capital of France?");
  await page.press("#prompt", "Enter");
  check(/can't use this schema/.test(await page.textContent("#notice-heading")), `notice: ${await page.textContent("#notice-heading")}`);
  check((await page.inputValue("#prompt")) === "Capital of France?", "the message was not kept in the box");
  check((await page.evaluate(() => document.querySelectorAll("#messages .msg").length)) === 0, "a refused message was sent");

  // Valid JSON the engine cannot honour: BAD_REQUEST before any token, its reason shown.
  await page.fill("#json-schema", '{"type": "object", "properties": {"phone": {"type": "string", "format": "phone"}}}');
  check(!(await page.isVisible("#json-schema-error")), "a valid JSON schema is still flagged");
  const bad = await chat(page, "Capital of France?");
  check(bad.state === "error" && bad.notice && /can't use this schema/.test(bad.notice) && /phone/.test(bad.notice), `an unsupported schema: ${bad.state}, ${bad.notice}`);
  check(await engineState(page) === "ready", "the engine is not ready after a refused schema");

  // No schema: any JSON object (a new chat each time: shorter prompts, and no JSON turns in the history
  // for the plain reply to imitate).
  await page.fill("#json-schema", "");
  await page.click("#notice-actions button:last-child"); // Dismiss
  await page.click("#new-chat-top");
  const r = await chat(page, "Capital of France, as JSON?");
  check(r.state === "done", `JSON reply ended as ${r.state}: ${r.meta} ${r.notice ?? ""}`);
  check(!/cut off/.test(r.meta), `the JSON reply did not fit ${JSON_TOKENS} tokens: ${JSON.stringify(r.text)} (${r.meta})`);
  let value;
  try {
    value = JSON.parse(r.text);
  } catch (err) {
    throw new Failure(`the JSON-mode reply does not parse (${err.message}): ${JSON.stringify(r.text)}`);
  }
  check(value !== null && typeof value === "object" && !Array.isArray(value), `the reply is not a JSON object: ${r.text}`);
  const shown = await page.evaluate(() => {
    const el = [...document.querySelectorAll("#messages .msg.assistant")].at(-1);
    return { json: el.classList.contains("json"), code: !!el.querySelector("pre > code"), valid: el.dataset.json };
  });
  check(shown.json && shown.code && shown.valid === "valid", `not shown as a JSON code block: ${JSON.stringify(shown)}`);
  check(r.text === JSON.stringify(value, null, 2), "the JSON is not pretty-printed");
  check(/JSON/.test(r.meta), `the reply's note does not say JSON: ${r.meta}`);
  await shot(page, "13-json-mode-desktop");

  // Off again: a plain reply.
  await page.click("#json-toggle");
  await page.click("#new-chat-top");
  await setSetting(page, "max-tokens", CHAT_TOKENS);
  const p = await chat(page, "Say hello.");
  check(p.state === "done" && p.text.trim().length > 0, `plain reply ${p.state}: ${JSON.stringify(p.text)}`);
  const plain = await page.evaluate(() => {
    const el = [...document.querySelectorAll("#messages .msg.assistant")].at(-1);
    return { json: el.classList.contains("json"), code: !!el.querySelector("code"), stored: JSON.parse(localStorage.getItem("webgpu-llm-app:settings")).json };
  });
  check(!plain.json && !plain.code && plain.stored === false, `after turning JSON mode off: ${JSON.stringify(plain)}`);
  return `bad schema refused; unsupported → ${JSON.stringify(bad.notice.split("\n")[0])}; JSON reply ${JSON.stringify(JSON.stringify(value))} (${r.usage?.completion_tokens} tokens, ${r.doneAt} ms); then plain ${JSON.stringify(p.text)}`;
});

await step("narrow", false, async () => {
  await page.setViewportSize(NARROW);
  await page.evaluate(() => (document.getElementById("main").scrollTop = 1e9));
  await shot(page, "07-chat-narrow");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  check(!overflow, "the page scrolls sideways at 390 px");
  check(await page.isVisible("#prompt") && (await page.isVisible("#send")), "composer not visible at 390 px");
  await page.click("#menu-button");
  await page.waitForTimeout(300);
  check((await page.getAttribute("#menu-button", "aria-expanded")) === "true", "menu button not expanded");
  await shot(page, "08-menu-narrow");
  await page.keyboard.press("Escape");
  await page.waitForTimeout(300);
  check((await page.getAttribute("#menu-button", "aria-expanded")) === "false", "Escape did not close the drawer");
  await page.emulateMedia({ colorScheme: "dark" });
  await shot(page, "07-chat-narrow-dark");
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize(DESKTOP);
  return "no sideways scroll; drawer opens and closes with Escape";
});

await step("error-states", false, async () => {
  // The GPU errors can't be produced on demand here, so a second browser (fresh profile, service
  // workers blocked) gets a stand-in engine worker that answers the load with each error code, as
  // the package's worker would.
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--enable-unsafe-webgpu"] });
  try {
    const ctx = await browser.newContext({ viewport: DESKTOP, serviceWorkers: "block" });
    let error = null;
    await ctx.route("**/www/app/engine-worker.js", (route) =>
      route.fulfill({
        contentType: "text/javascript",
        body: `self.onmessage = (e) => { if (e.data?.type === "load") self.postMessage({ type: "error", id: e.data.id, error: ${JSON.stringify(error)} }); };`,
      }),
    );
    const p = watch(await ctx.newPage(), "errors");
    const cases = [
      ["OUT_OF_MEMORY", { message: "the model needs 5.2 GiB of GPU memory (weights + KV cache), the device gave out at 3.1 GiB", neededBytes: 5.6e9 }, /GPU memory/, "10-out-of-memory"],
      ["LIMIT_TOO_SMALL", { message: "maxStorageBuffersPerShaderStage is 4, 8 are needed", limit: "maxStorageBuffersPerShaderStage", needed: 8, available: 4 }, /limits are too small/, "11-limit-too-small"],
      ["FEATURE_MISSING", { message: "the model needs shader-f16" }, /lacks a feature/, "12-feature-missing"],
      ["QUOTA", { message: "not enough storage", neededBytes: 98e6, availableBytes: 20e6 }, /storage/, null],
    ];
    const seen = [];
    for (const [code, details, titleRe, name] of cases) {
      error = { code, ...details };
      await p.goto(APP);
      await p.waitForFunction(() => document.getElementById("app").dataset.ready === "true", null, { timeout: 20_000 });
      await p.click("#load-default");
      await p.waitForFunction(() => document.getElementById("app").dataset.engine === "error", null, { timeout: 20_000 });
      const title = await p.textContent("#notice-heading");
      check(titleRe.test(title), `${code}: title ${JSON.stringify(title)}`);
      const body = await p.innerText("#notice");
      if (code === "OUT_OF_MEMORY") check(/5\.6 GB/.test(body) && /shorter context/.test(body), `OOM text: ${body}`);
      if (code === "LIMIT_TOO_SMALL") check(/maxStorageBuffersPerShaderStage/.test(body) && /allows 4/.test(body), `limit text: ${body}`);
      if (code === "QUOTA") check(/without keeping it offline/i.test(body), `quota has no "load without caching" action: ${body}`);
      if (name) await shot(p, `${name}-desktop`);
      if (code === "OUT_OF_MEMORY") {
        await shot(p, `${name}-narrow`, NARROW);
        await p.setViewportSize(DESKTOP);
      }
      seen.push(`${code} → ${JSON.stringify(title)}`);
    }
    return seen.join("; ");
  } finally {
    await browser.close();
  }
});

await step("offline", true, async () => {
  const before = await page.evaluate(() => document.querySelectorAll("#messages .msg").length);
  await server.close();
  server = null;
  await context.setOffline(true);
  const failed = [];
  const onFail = (req) => failed.push(`${new URL(req.url()).pathname} (${req.failure()?.errorText})`);
  page.on("requestfailed", onFail);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("app").dataset.ready === "true", null, { timeout: 30_000 });
  const controlled = await page.evaluate(() => !!navigator.serviceWorker.controller);
  check(controlled, "the page is not controlled by the service worker");
  const state = await waitEngine(page, ["ready", "error", "none", "unsupported"], 120_000);
  if (state !== "ready") throw new Failure(`offline: engine ${state}: ${await page.innerText("#notice").catch(() => "")}`);
  const fromCache = await page.evaluate(() => document.getElementById("app").dataset.modelFromCache);
  check(fromCache === "true", `the model did not load from the package's cache (fromCache ${fromCache})`);
  const restored = await page.evaluate(() => document.querySelectorAll("#messages .msg").length);
  check(restored === before, `the chat was not restored (${restored} messages, ${before} before)`);
  check(await page.isVisible("#net-chip"), "no offline indicator");
  await page.click("#new-chat-top");
  check((await page.evaluate(() => document.querySelectorAll("#messages .msg").length)) === 0, "New chat did not clear the view");
  await setSetting(page, "max-tokens", CHAT_TOKENS);
  const r = await chat(page, "Say hello.");
  check(r.state === "done" && r.text.trim().length > 0, `offline answer ${r.state}: ${JSON.stringify(r.text)} ${r.notice ?? ""}`);
  check(r.samples.length >= 2, `offline answer not streamed: ${JSON.stringify(r.samples)}`);
  await shot(page, "09-offline-chat-desktop");
  page.off("requestfailed", onFail);
  const list = await page.evaluate(() => document.querySelectorAll("#chat-list li").length);
  check(list >= 2, `the chat list has ${list} entries`);
  return `server down + browser offline: restored ${restored} messages, model from the package cache (fromCache), answer ${JSON.stringify(r.text)}; failed requests: ${failed.length ? failed.join(", ") : "none"}`;
});

await step("file", false, async () => {
  // Still offline: a GGUF picked with <input type=file> is read, not downloaded.
  await page.click("#model-chip");
  await page.waitForSelector("#model-dialog[open]");
  await page.setInputFiles("#model-file", path.join(REPO, "models/SmolLM2-135M-Instruct.Q4_1.gguf"));
  check(await page.isChecked('input[name=source][value="file"]'), "picking a file did not select the file option");
  await page.click("#model-load");
  await page.waitForFunction(() => document.getElementById("app").dataset.engine === "loading", null, { timeout: 10_000 });
  const state = await waitEngine(page, ["ready", "error"], 120_000);
  if (state !== "ready") throw new Failure(`file load: ${await page.innerText("#notice")}`);
  const fromCache = await page.evaluate(() => document.getElementById("app").dataset.modelFromCache);
  const summary = await page.textContent("#model-summary");
  check(/from the file/.test(summary), `model summary ${JSON.stringify(summary)}`);
  return `loaded from a File in the worker (fromCache ${fromCache}): ${JSON.stringify(await page.textContent("#model-chip-text"))}`;
});

await context.close();
await server?.close();
if (!KEEP) fs.rmSync(tmp, { recursive: true, force: true });
else log(`kept ${tmp}`);

const failedSteps = results.filter((r) => !r.ok);
if (failedSteps.length && !VERBOSE) {
  console.log("--- browser console (last 40 lines) ---");
  for (const l of consoleLines.slice(-40)) console.log(l);
}
console.log(`screenshots (${SHOTS}):\n  ${shots.join("\n  ")}`);
console.log(`${results.length - failedSteps.length}/${results.length} passed in ${secs(Date.now() - t0)} s`);
process.exit(failedSteps.length ? 1 : 0);
