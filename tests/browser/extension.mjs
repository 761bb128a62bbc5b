// The Chrome MV3 extension (www/extension/) in headless Chromium (SwiftShader WebGPU), driven by
// playwright-core: build it, load it unpacked, ask about a test article, check the streamed answer,
// the prompt, the model cache and every network request the browser made.
//
//   node tests/browser/extension.mjs [--keep] [--verbose]
//   node tests/browser/extension.mjs --serve [port]   serve models/ and the test article with CORS
//                                                     (default port 8080: the URL build-extension.sh bakes
//                                                     in by default), for trying the extension by hand
//
// Needs pkg/wasm/ (bash scripts/build-pkg.sh) and models/SmolLM2-135M-Instruct.Q4_1.gguf
// (bash scripts/fetch-model.sh). Prints PASS/FAIL lines; exits non-zero on failure.
//
// Steps:
//  1. scripts/build-extension.sh into a temp dir, model URL = this test's server, page access
//     "http://127.0.0.1/*" (automation cannot click the toolbar button that grants activeTab).
//  2. Chromium with a fresh profile, the extension loaded unpacked, and *every* request sent through
//     this test's server as an HTTP proxy (--proxy-server, with loopback not bypassed): the server sees
//     all HTTP(S) traffic of the browser, to any host, logs it and refuses anything not for itself.
//     Chromium itself talks to Google (sign-in, updater) even with background networking off; a bare
//     browser run for a few seconds first shows which hosts those are, so step 7 can tell them apart.
//  3. The article tab is opened; the panel page is opened in a tab as
//     chrome-extension://ID/sidepanel.html?tab=ID: the real side panel only opens on a user gesture
//     (toolbar click, chrome.sidePanel.open in a gesture), which automation cannot make. It is the same
//     page and code; `?tab=` names the tab to read instead of "the active tab of this window".
//  4. Options: page text budget 90 tokens, answers of 12 tokens (SwiftShader prefills ~5 tok/s).
//     Summarize: the answer streams (its text grows over several steps), the prompt holds the article's
//     start ("axolotl", "Xochimilco") but not the nav bar, nor the last paragraph ("Xolotl", cut by the
//     budget). The answer must name the article's subject (axolotl / Xochimilco / salamander): SmolLM2
//     -135M with greedy decoding opens a summary of this page by restating its title ("Axolotls: …"),
//     and the test accepts any of three page words so a slightly different wording still passes.
//  5. Explain selection (a sentence selected in the tab): the selection is in the prompt, and the KV
//     cache of the shared page prefix is reused (cached tokens > 0).
//     A screenshot of the panel with its answer goes to target/screenshots/extension-sidepanel.png
//     (or $EXTENSION_SCREENSHOT; step 6c adds …-extract.png, with a table).
//  6. Panel reloaded: the model loads from the extension's Cache API with no request.
//  6b. A .gguf picked with the Options file input loads from disk (no request).
//  6c. Extract (JSON constrained to a schema, shown as a table), with the tiny random-weight fixture
//     (tests/fixtures/kquant/tiny-q4_k_m.gguf, picked as a file): a random model writes garbage unless
//     constrained, so JSON that parses and validates shows the constraint at work, and it is fast. A
//     pasted schema that is not JSON and one the engine cannot honour (an unknown string format) each
//     show an error naming the problem and leave the panel usable; then a small pasted schema gives
//     JSON that parses and validates (ajv), a table with a row per item, and Copy puts it on the
//     clipboard; the built-in "Events" schema gives valid JSON too; "Key facts" with room for 8 tokens
//     is cut, and the panel says so (finish "length") instead of showing a table.
//  6d. Find by meaning, with the real all-MiniLM-L6-v2 (an f16 package the CLI converts, served by this
//     test): two questions whose answers are in one paragraph each ("why are they in danger" → the
//     endangered paragraph, "where does the name come from" → the Nahuatl one) list that paragraph's
//     passage first; the article tab shows it in the strongest highlight (CSS Custom Highlight API) and
//     the others in the second; the second question embeds only itself (no new model request, the page's
//     vectors are kept); clicking the third result makes it the strongest highlight.
//  7. Requests: to the test server only the article (opened by the test) and the model file, the
//     model in step 4 only; to other hosts only what the bare browser also contacted (all refused);
//     and Playwright's request events (pages, their workers, the service worker) show no request from
//     an extension page or worker but the model's.

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import addFormats from "ajv-formats";
import { chromium } from "playwright-core";
import { minilmPackage } from "./minilm.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/lib/chromium/chromium";
const MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODELS_DIR = path.join(REPO, "models");
const PAGES_DIR = path.join(HERE, "extension-pages");
const CSP = "script-src 'self' 'wasm-unsafe-eval'; object-src 'self'";
const PAGE_BUDGET = 90;
const MAX_TOKENS = 12;
const EXTRACT_TOKENS = 200; // the tiny model's tokens are single bytes: a small pasted schema's JSON is ≤ ~130
const TINY_MODEL = path.join(REPO, "tests/fixtures/kquant/tiny-q4_k_m.gguf");
const SUBJECT = /axolotl|xochimilco|salamander/i;
const BASELINE_MS = 4000;
const SCREENSHOT = process.env.EXTENSION_SCREENSHOT ?? path.join(REPO, "target/screenshots/extension-sidepanel.png");
let browserOwnHosts = new Set();
const hostname = (host) => host.replace(/:\d+$/, "");
/** The embedding package is served at /EMBED_DIR/<file> (from target/browser-models, see minilm.mjs). */
const EMBED_DIR = "all-MiniLM-L6-v2";
let embedPkgDir = null;

const argv = process.argv.slice(2);
const KEEP = argv.includes("--keep");
const VERBOSE = argv.includes("--verbose");

const t0 = Date.now();
const secs = (ms) => (ms / 1000).toFixed(1);
const log = (...a) => console.log(`[${secs(Date.now() - t0).padStart(6)} s]`, ...a);

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}

// ---------------------------------------------------------------------------------------------
// Server: static files (the article, the models) and an HTTP proxy that logs everything.

const TYPES = { ".html": "text/html; charset=utf-8", ".gguf": "application/octet-stream", ".json": "application/json" };

function startServer(port = 0) {
  const log = [];
  const server = http.createServer((req, res) => {
    // A proxied request has an absolute URL ("GET http://host:port/path"); a direct one a path.
    const url = new URL(req.url, `http://${req.headers.host ?? "127.0.0.1"}`);
    const ours = url.hostname === "127.0.0.1" && Number(url.port) === server.address().port;
    const entry = { method: req.method, host: url.host, path: url.pathname, range: req.headers.range, proxied: /^[a-z]+:/i.test(req.url) };
    log.push(entry);
    if (!ours) {
      entry.status = 502;
      res.writeHead(502).end(); // nothing leaves this machine, even if something tries
      return;
    }
    entry.status = serveFile(req, res, url.pathname);
  });
  // HTTPS through the proxy (or WebSockets) start with CONNECT: log and refuse.
  server.on("connect", (req, socket) => {
    log.push({ method: "CONNECT", host: req.url, path: "", status: 502, proxied: true });
    socket.end("HTTP/1.1 502 Bad Gateway\r\n\r\n");
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve({ server, log, port: server.address().port })));
}

/** Serve /article.html from extension-pages/ and /<name> from models/, with Range and CORS. */
function serveFile(req, res, urlPath) {
  const name = decodeURIComponent(urlPath.slice(1));
  const cors = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Range",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges",
  };
  if (req.method === "OPTIONS") {
    res.writeHead(204, { ...cors, "Access-Control-Allow-Methods": "GET, HEAD" }).end();
    return 204;
  }
  const embedFile = embedPkgDir && name.startsWith(`${EMBED_DIR}/`) ? name.slice(EMBED_DIR.length + 1) : null;
  const dir = embedFile !== null ? embedPkgDir : fs.existsSync(path.join(PAGES_DIR, name)) ? PAGES_DIR : MODELS_DIR;
  const file = path.join(dir, embedFile ?? name);
  const flat = embedFile ?? name;
  if (!flat || flat.includes("/") || flat.startsWith(".") || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404, cors).end();
    return 404;
  }
  const size = fs.statSync(file).size;
  const headers = { ...cors, "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream", "Accept-Ranges": "bytes", "Cache-Control": "no-store" };
  const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? "");
  let start = 0;
  let end = size - 1;
  let status = 200;
  if (m && (m[1] !== "" || m[2] !== "")) {
    if (m[1] === "") start = Math.max(0, size - Number(m[2]));
    else [start, end] = [Number(m[1]), m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1)];
    if (start >= size || start > end) {
      res.writeHead(416, { ...cors, "Content-Range": `bytes */${size}` }).end();
      return 416;
    }
    status = 206;
    headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
  }
  headers["Content-Length"] = end - start + 1;
  res.writeHead(status, headers);
  if (req.method === "HEAD") res.end();
  else fs.createReadStream(file, { start, end }).pipe(res);
  return status;
}

if (argv.includes("--serve")) {
  const port = Number(argv[argv.indexOf("--serve") + 1]) || 8080;
  embedPkgDir = minilmPackage().pkgDir;
  const { port: p } = await startServer(port);
  console.log(`serving ${MODELS_DIR} and ${PAGES_DIR} with CORS and Range:`);
  console.log(`  model:   http://127.0.0.1:${p}/${MODEL_NAME}`);
  console.log(`  embedding model: http://127.0.0.1:${p}/${EMBED_DIR}/manifest.json`);
  console.log(`  article: http://127.0.0.1:${p}/article.html`);
  await new Promise(() => {});
}

// ---------------------------------------------------------------------------------------------

async function main() {
  check(fs.existsSync(path.join(REPO, "pkg/wasm/webgpu_llm.js")), "pkg/wasm/ is missing: run bash scripts/build-pkg.sh");
  check(fs.existsSync(path.join(MODELS_DIR, MODEL_NAME)), `models/${MODEL_NAME} is missing: run bash scripts/fetch-model.sh`);
  const tmp = fs.mkdtempSync(path.join(process.env.BROWSER_TEST_TMP ?? os.tmpdir(), "webgpu-llm-ext-"));
  embedPkgDir = minilmPackage().pkgDir;
  const srv = await startServer();
  const base = `http://127.0.0.1:${srv.port}`;
  const modelUrl = `${base}/${MODEL_NAME}`;
  const embedModelUrl = `${base}/${EMBED_DIR}/manifest.json`;
  const articleUrl = `${base}/article.html`;
  let context;
  const results = [];
  const step = async (name, fn) => {
    const s = Date.now();
    try {
      const figures = await fn();
      results.push({ name, ok: true });
      log(`PASS ${name} (${secs(Date.now() - s)} s)${figures ? `: ${figures}` : ""}`);
    } catch (err) {
      results.push({ name, ok: false });
      log(`FAIL ${name} (${secs(Date.now() - s)} s): ${err instanceof Failure ? err.message : err?.stack ?? err}`);
      throw err;
    }
  };

  try {
    // 1. Build.
    const extDir = path.join(tmp, "extension");
    const zip = path.join(tmp, "extension.zip");
    await step("build", () => {
      const r = spawnSync("bash", [path.join(REPO, "scripts/build-extension.sh"), "--model-url", modelUrl, "--embed-model-url", embedModelUrl, "--page-access", "http://127.0.0.1/*", "--out", extDir, "--zip", zip], { encoding: "utf8" });
      check(r.status === 0, `build-extension.sh failed (${r.status}): ${r.stderr}${r.stdout}`);
      const manifest = JSON.parse(fs.readFileSync(path.join(extDir, "manifest.json"), "utf8"));
      check(manifest.manifest_version === 3, "manifest_version is not 3");
      check(manifest.content_security_policy?.extension_pages === CSP, `CSP is ${JSON.stringify(manifest.content_security_policy)}`);
      const config = fs.readFileSync(path.join(extDir, "config.js"), "utf8");
      check(config.includes(JSON.stringify(modelUrl)) && config.includes(JSON.stringify(embedModelUrl)), "config.js lacks the model URLs");
      for (const f of ["pkg/index.js", "pkg/src/worker.js", "pkg/wasm/webgpu_llm_bg.wasm", "sidepanel.html", "background.js"]) {
        check(fs.existsSync(path.join(extDir, f)), `${f} missing from the built extension`);
      }
      const head = fs.readFileSync(zip).subarray(0, 2).toString();
      check(head === "PK", "the .zip is not a zip");
      return r.stdout.trim().replace(/^build-extension.sh: /, "");
    });

    // 2. Browser: fresh profile, extension unpacked, all traffic through the logging proxy. First a
    // bare browser (no extension) for a few seconds through its own proxy: what it contacts is the
    // browser's own traffic (Chromium 156 here: accounts.google.com, update.googleapis.com, even with
    // --disable-background-networking --disable-component-update), which step 7 tells apart.
    const xdg = path.join(tmp, "xdg");
    fs.mkdirSync(xdg);
    const launch = (profile, proxyPort, extra) =>
      chromium.launchPersistentContext(path.join(tmp, profile), {
        executablePath: CHROMIUM,
        headless: true,
        env: { ...process.env, XDG_RUNTIME_DIR: xdg, PW_EXPERIMENTAL_SERVICE_WORKER_NETWORK_EVENTS: "1" },
        args: [
          "--enable-unsafe-webgpu",
          "--no-sandbox",
          ...extra,
          `--proxy-server=http://127.0.0.1:${proxyPort}`,
          "--proxy-bypass-list=<-loopback>", // send 127.0.0.1 through the proxy too (Chrome bypasses loopback by default)
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--disable-quic",
        ],
      });
    const bare = await startServer();
    const bareContext = await launch("bare-profile", bare.port, []);
    await (await bareContext.newPage()).goto("about:blank");
    await new Promise((r) => setTimeout(r, BASELINE_MS));
    await bareContext.close();
    bare.server.close();
    browserOwnHosts = new Set(bare.log.map((e) => hostname(e.host)));
    log(`a bare browser contacted in ${secs(BASELINE_MS)} s: ${[...browserOwnHosts].join(", ") || "nothing"}`);

    context = await launch("profile", srv.port, [`--disable-extensions-except=${extDir}`, `--load-extension=${extDir}`]);
    const pwRequests = [];
    context.on("request", (r) => pwRequests.push({ url: r.url(), from: r.frame?.()?.url?.() ?? "" }));
    const sw = context.serviceWorkers()[0] ?? (await context.waitForEvent("serviceworker", { timeout: 20000 }));
    const extId = new URL(sw.url()).host;
    log(`extension ${extId} loaded (${sw.url()})`);

    // 3. The article tab and the panel page.
    const article = await context.newPage();
    await article.goto(articleUrl);
    const tabs = await sw.evaluate((url) => chrome.tabs.query({ url }), articleUrl);
    check(tabs.length === 1, `expected one article tab, found ${tabs.length}`);
    const tabId = tabs[0].id;
    const panelUrl = `chrome-extension://${extId}/sidepanel.html?tab=${tabId}`;
    const panel = await context.newPage();
    await panel.setViewportSize({ width: 400, height: 900 }); // about a side panel's size
    const consoleLines = [];
    panel.on("console", (m) => {
      consoleLines.push(`${m.type()}: ${m.text()}`);
      if (VERBOSE) log(`panel ${m.type()}: ${m.text()}`);
    });
    panel.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
    await panel.goto(panelUrl);
    await panel.waitForFunction(() => document.body.dataset.model === "none", null, { timeout: 20000 });

    await step("options", async () => {
      await panel.click("#options > summary");
      await panel.fill("#page-budget", String(PAGE_BUDGET));
      await panel.fill("#max-tokens", String(MAX_TOKENS));
      await panel.fill("#extract-tokens", String(EXTRACT_TOKENS));
      check((await panel.inputValue("#model-url")) === modelUrl, "the Options model URL is not the baked-in one");
      await panel.click("#save-options");
      await panel.waitForFunction(() => document.getElementById("options-status").textContent === "Saved.");
      const stored = await panel.evaluate(() => chrome.storage.local.get(null));
      check(stored.pageBudget === PAGE_BUDGET && stored.maxTokens === MAX_TOKENS && stored.extractTokens === EXTRACT_TOKENS, `stored settings ${JSON.stringify(stored)}`);
      return `budget ${PAGE_BUDGET} tokens, answers ≤ ${MAX_TOKENS} tokens, extractions ≤ ${EXTRACT_TOKENS}`;
    });

    // Records (ms, length) each time the answer's text changes, from inside the page.
    const watchAnswer = () =>
      panel.evaluate(() => {
        const el = document.getElementById("answer");
        const start = performance.now();
        window.__samples = [];
        window.__observer?.disconnect();
        window.__observer = new MutationObserver(() => window.__samples.push([performance.now() - start, el.textContent.length])).observe(el, {
          childList: true,
          characterData: true,
          subtree: true,
        });
      });
    const waitDone = async (ms) => {
      await panel.waitForFunction(() => ["done", "error"].includes(document.body.dataset.run), null, { timeout: ms, polling: 250 });
      return panel.evaluate(() => ({
        run: document.body.dataset.run,
        answer: document.getElementById("answer").textContent,
        error: document.getElementById("error").textContent,
        prompt: document.getElementById("prompt").textContent,
        truncated: document.getElementById("prompt-info").dataset.truncated,
        stats: { ...document.getElementById("stats").dataset },
        statsText: document.getElementById("stats").textContent,
        modelStatus: document.getElementById("model-status").textContent,
        samples: window.__samples,
      }));
    };

    // 4. Summarize (downloads the model first).
    let modelRequestsAfterFirst = 0;
    const modelReqs = () => srv.log.filter((e) => e.path === `/${MODEL_NAME}`).length;
    await step("summarize", async () => {
      await watchAnswer();
      const s = Date.now();
      await panel.click("#summarize");
      const r = await waitDone(300000);
      if (VERBOSE) log(JSON.stringify({ ...r, samples: undefined }, null, 1));
      check(r.run === "done", `the panel ended in state ${r.run}: ${r.error}`);
      check(/axolotl/i.test(r.prompt) && /Xochimilco/.test(r.prompt), "the prompt sent lacks the article's words (axolotl, Xochimilco)");
      check(!/Newsletter/.test(r.prompt), "the prompt holds the nav bar: the main content was not picked");
      check(r.truncated === "true" && !/Xolotl\b/.test(r.prompt), "the page text was not cut to the budget (the last paragraph's 'Xolotl' is in the prompt)");
      const lengths = [...new Set(r.samples.map(([, n]) => n).filter((n) => n > 0))];
      check(lengths.length >= 3, `the answer did not stream: text lengths seen ${JSON.stringify(lengths)}`);
      check(lengths.every((n, i) => i === 0 || n > lengths[i - 1]), `the answer text did not only grow: ${JSON.stringify(lengths)}`);
      check(r.answer.trim().length > 0 && Number(r.stats.completionTokens) > 0, "empty answer");
      check(SUBJECT.test(r.answer), `the answer does not mention the page's subject: ${JSON.stringify(r.answer)}`);
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await panel.screenshot({ path: SCREENSHOT, fullPage: true });
      modelRequestsAfterFirst = modelReqs();
      check(modelRequestsAfterFirst > 0, "the model was not requested from the server");
      const firstMs = r.samples.find(([, n]) => n > 0)?.[0] ?? NaN;
      const lastMs = r.samples.at(-1)?.[0] ?? NaN;
      return `${secs(Date.now() - s)} s; answer ${JSON.stringify(r.answer)}; grew in ${lengths.length} steps from ${secs(firstMs)} s to ${secs(lastMs)} s; ${r.statsText}; model: ${r.modelStatus}`;
    });

    // 5. Explain a selection on the page: the page prefix's KV cache is reused.
    await step("explain-selection", async () => {
      const sentence = await article.evaluate(() => {
        const p = document.querySelectorAll("article p")[1];
        const range = document.createRange();
        range.selectNodeContents(p);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        return getSelection().toString().replace(/\s+/g, " ").trim();
      });
      await watchAnswer();
      await panel.click("#explain");
      const r = await waitDone(240000);
      if (VERBOSE) log(JSON.stringify({ ...r, samples: undefined }, null, 1));
      check(r.run === "done", `the panel ended in state ${r.run}: ${r.error}`);
      check(r.prompt.replace(/\s+/g, " ").includes(sentence), "the selected sentence is not in the prompt");
      check(Number(r.stats.cachedTokens) > 0, `no KV reuse for the same page (cached tokens ${r.stats.cachedTokens})`);
      check(r.answer.trim().length > 0, "empty answer");
      return `answer ${JSON.stringify(r.answer)}; ${r.statsText}`;
    });

    // 6. Panel reopened: the model comes from the extension's cache.
    await step("cached-reload", async () => {
      const before = srv.log.length;
      await panel.reload();
      await panel.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.model), null, { timeout: 120000, polling: 250 });
      const st = await panel.evaluate(() => ({ model: document.body.dataset.model, fromCache: document.body.dataset.fromCache, status: document.getElementById("model-status").textContent }));
      check(st.model === "ready", `the model did not load on reopening: ${st.status}`);
      check(st.fromCache === "true", `the model was not loaded from the cache: ${st.status}`);
      const newRequests = srv.log.slice(before);
      check(newRequests.length === 0, `reopening made requests: ${JSON.stringify(newRequests)}`);
      return st.status;
    });

    // 6b. A model file picked in Options (<input type=file>): read from disk, no request, not cached.
    await step("local-file", async () => {
      const before = srv.log.length;
      await panel.setInputFiles("#model-file", path.join(MODELS_DIR, MODEL_NAME));
      await panel.waitForFunction(() => /from the file/.test(document.getElementById("model-status").textContent) || document.body.dataset.model === "error", null, { timeout: 120000, polling: 250 });
      const st = await panel.evaluate(() => ({ model: document.body.dataset.model, status: document.getElementById("model-status").textContent }));
      check(st.model === "ready", `the picked file did not load: ${st.status}`);
      check(srv.log.length === before, `loading a picked file made requests: ${JSON.stringify(srv.log.slice(before))}`);
      return st.status;
    });

    // 6c. Extract, with the tiny random model.
    await step("extract", async () => {
      const before = await panel.textContent("#model-status");
      await panel.setInputFiles("#model-file", TINY_MODEL);
      await panel.waitForFunction((b) => document.getElementById("model-status").textContent !== b && ["ready", "error"].includes(document.body.dataset.model), before, { timeout: 60000, polling: 100 });
      const loaded = await panel.evaluate(() => ({ model: document.body.dataset.model, status: document.getElementById("model-status").textContent }));
      check(loaded.model === "ready", `the tiny model did not load: ${loaded.status}`);
      // Chromium grants no permission to an extension origin from automation; the clipboard is the
      // browser's, so the article's page (granted clipboard-read) reads what the panel copied.
      await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
      const extractState = () =>
        panel.evaluate(() => ({
          run: document.body.dataset.run,
          answer: document.getElementById("answer").textContent,
          error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
          errorKind: document.getElementById("error").dataset.kind ?? "",
          tableShown: !document.getElementById("extracted").hidden,
          rows: [...document.querySelectorAll("#tables tbody tr")].map((tr) => [...tr.cells].map((td) => td.textContent)),
          columns: [...document.querySelectorAll("#tables thead th")].map((th) => th.textContent),
          finish: document.getElementById("stats").dataset.finish,
          stats: document.getElementById("stats").textContent,
          buttonEnabled: !document.getElementById("extract-button").disabled,
        }));
      const extract = async () => {
        await panel.waitForFunction(() => !document.getElementById("extract-button").disabled);
        await panel.click("#extract-button");
        await panel.waitForFunction(() => ["done", "error"].includes(document.body.dataset.run) && !document.getElementById("extract-button").disabled, null, { timeout: 120000, polling: 100 });
        return extractState();
      };
      const custom = async (text) => {
        await panel.selectOption("#schema", "custom");
        await panel.fill("#custom-schema", text);
      };
      /** A finished extraction: parses, validates against `schema`, one table row per item of `list`. */
      const checkExtracted = async (r, schema, list, label) => {
        if (r.finish === "length") {
          check(r.run === "error" && r.errorKind === "cut" && /cut at \d+ tokens/.test(r.error) && !r.tableShown, `${label}: cut output not reported as cut: ${JSON.stringify(r)}`);
          throw new Failure(`${label}: the output did not fit ${EXTRACT_TOKENS} tokens (reported as cut, correctly): ${JSON.stringify(r.answer)}`);
        }
        check(r.run === "done" && r.finish === "stop", `${label}: ended as ${r.run}/${r.finish}: ${r.error}`);
        let value;
        try {
          value = JSON.parse(r.answer);
        } catch (err) {
          throw new Failure(`${label}: the output does not parse (${err.message}): ${JSON.stringify(r.answer)}`);
        }
        const problems = validate(schema, value);
        check(problems.length === 0, `${label}: the output does not validate: ${problems.join("; ")}: ${r.answer}`);
        check(r.tableShown, `${label}: no table shown`);
        const items = value[list];
        const expectRows = Math.max(1, items.length); // an empty list shows one "Nothing found" row
        check(r.rows.length === expectRows, `${label}: ${r.rows.length} table rows for ${items.length} items`);
        if (items.length) check(r.rows[0][0] === Object.values(items[0])[0], `${label}: first cell ${JSON.stringify(r.rows[0][0])}, item ${JSON.stringify(items[0])}`);
        return value;
      };
      const seen = [];

      // Not JSON: refused before anything runs.
      const s0 = Date.now();
      await custom('{"type": "object", "properties": ');
      let r = await extract();
      check(r.run === "error" && r.errorKind === "schema" && /not valid JSON/.test(r.error), `a schema that is not JSON: ${JSON.stringify(r)}`);
      check(r.buttonEnabled && !r.tableShown, "the panel is not usable after a bad schema");
      const focused = await panel.evaluate(() => document.activeElement?.id);
      check(focused === "custom-schema", `focus on ${focused}, not the schema box`);
      seen.push(`not JSON → ${JSON.stringify(r.error)} (${Date.now() - s0} ms)`);

      // Valid JSON, but a format the engine does not know: BAD_REQUEST naming it, before any token.
      const s1 = Date.now();
      await custom('{"type": "object", "properties": {"phone": {"type": "string", "format": "phone"}}, "required": ["phone"]}');
      r = await extract();
      check(r.run === "error" && r.errorKind === "schema" && /cannot follow this schema/.test(r.error) && /phone/.test(r.error), `an unsupported schema: ${JSON.stringify(r)}`);
      check(r.answer === "" && r.buttonEnabled, `an unsupported schema generated ${JSON.stringify(r.answer)} or left the panel busy`);
      seen.push(`unsupported → ${JSON.stringify(r.error)} (${Date.now() - s1} ms)`);

      // A small pasted schema: the extraction after the errors works.
      const s2 = Date.now();
      await custom(JSON.stringify(SMALL_SCHEMA));
      r = await extract();
      const small = await checkExtracted(r, SMALL_SCHEMA, "animals", "pasted schema");
      await panel.screenshot({ path: SCREENSHOT.replace(/\.png$/, "-extract.png"), fullPage: true });
      seen.push(`pasted → ${r.answer} (${Date.now() - s2} ms; ${r.stats})`);

      // Copy: the pretty-printed JSON on the clipboard.
      await panel.bringToFront();
      await panel.click("#copy");
      await panel.waitForFunction(() => document.getElementById("copy-status").textContent !== "", null, { timeout: 5000 });
      const status = await panel.textContent("#copy-status");
      check(status === "Copied.", `Copy says ${JSON.stringify(status)}`);
      await article.bringToFront();
      const copied = await article.evaluate(() => navigator.clipboard.readText());
      check(copied.includes("\n") && JSON.stringify(JSON.parse(copied)) === JSON.stringify(small), `the clipboard holds ${JSON.stringify(copied)}`);

      // A built-in schema, complete.
      const s4 = Date.now();
      const events = await panel.evaluate(async () => (await import(new URL("schemas.js", location.href).href)).SCHEMAS.events.schema);
      await panel.selectOption("#schema", "events");
      r = await extract();
      await checkExtracted(r, events, "events", "events");
      seen.push(`events → ${r.answer.length > 120 ? `${r.answer.slice(0, 120)}…` : r.answer} (${Date.now() - s4} ms)`);

      // A built-in schema with room for 8 tokens: the JSON starts, is cut, and the panel says so.
      const s3 = Date.now();
      await panel.evaluate(() => (document.getElementById("options").open = true)); // closed since the reload
      await panel.fill("#extract-tokens", "8");
      await panel.click("#save-options");
      await panel.selectOption("#schema", "facts");
      r = await extract();
      check(r.finish === "length" && r.run === "error" && r.errorKind === "cut" && /cut at 8 tokens/.test(r.error), `key facts in 8 tokens: ${JSON.stringify(r)}`);
      check(r.answer.length > 0 && '{"facts": ['.startsWith(r.answer.slice(0, 11)) && !r.tableShown, `key facts: partial output ${JSON.stringify(r.answer)}, table shown ${r.tableShown}`);
      seen.push(`key facts, 8 tokens → ${JSON.stringify(r.answer)}, "${r.error.slice(0, 60)}…" (${Date.now() - s3} ms)`);
      await panel.fill("#extract-tokens", String(EXTRACT_TOKENS));
      await panel.click("#save-options");
      const stored = await panel.evaluate(() => chrome.storage.local.get(["schema", "customSchema"]));
      check(stored.schema === "facts" && stored.customSchema === JSON.stringify(SMALL_SCHEMA), `the schema choice was not kept: ${JSON.stringify(stored)}`);
      return seen.join("; ");
    });

    // 6d. Find by meaning (a second engine: the embedding model, in its own worker).
    let embedRequests = 0;
    await step("find", async () => {
      const findState = () =>
        panel.evaluate(() => ({
          find: document.body.dataset.find,
          status: document.getElementById("find-status").textContent,
          results: [...document.querySelectorAll("#find-results li")].map((li) => ({ score: Number(li.dataset.score), text: li.querySelector(".passage").textContent })),
        }));
      const marked = () =>
        article.evaluate(() => ({
          best: [...(CSS.highlights.get("webgpu-llm-find-best") ?? [])].map((r) => r.toString().replace(/\s+/g, " ").trim()),
          others: [...(CSS.highlights.get("webgpu-llm-find") ?? [])].map((r) => r.toString().replace(/\s+/g, " ").trim()),
        }));
      const ask = async (query) => {
        await panel.fill("#find-query", query);
        await panel.click("#find-button");
        await panel.waitForFunction(() => ["done", "error"].includes(document.body.dataset.find), null, { timeout: 180000, polling: 100 });
        const r = await findState();
        check(r.find === "done", `find ${JSON.stringify(query)} ended in ${r.find}: ${r.status}`);
        check(r.results.length >= 3 && r.results.every((x, i) => i === 0 || x.score <= r.results[i - 1].score), `find ${JSON.stringify(query)}: results ${JSON.stringify(r.results)}`);
        return r;
      };
      const figures = [];
      for (const [query, want] of [["Why are they in danger of dying out?", /critically endangered/], ["Where does the name come from?", /Nahuatl/]]) {
        const before = srv.log.length;
        const r = await ask(query);
        check(want.test(r.results[0].text), `find ${JSON.stringify(query)}: the first result is ${JSON.stringify(r.results[0])}, not the passage with ${want}`);
        const m = await marked();
        check(m.best.length === 1 && m.best[0] === r.results[0].text && m.others.length === r.results.length - 1, `find ${JSON.stringify(query)}: the page's highlights ${JSON.stringify(m)}`);
        if (figures.length) check(srv.log.length === before, `the second question made requests: ${JSON.stringify(srv.log.slice(before))}`);
        figures.push(`${JSON.stringify(query)} → ${r.results[0].score.toFixed(3)} ${JSON.stringify(r.results[0].text.slice(0, 40))}…`);
        figures.push(r.status);
      }
      // A click on a result makes it the strongest highlight.
      const third = (await findState()).results[2].text;
      await panel.click("#find-results li:nth-child(3)");
      await article.waitForFunction((t) => [...(CSS.highlights.get("webgpu-llm-find-best") ?? [])].some((r) => r.toString().replace(/\s+/g, " ").trim() === t), third, { timeout: 10000 });
      embedRequests = srv.log.filter((e) => e.path.startsWith(`/${EMBED_DIR}/`)).length;
      check(embedRequests > 0, "the embedding model was not requested");
      return figures.join("; ");
    });

    // 7. Every request the browser made.
    await step("network", async () => {
      const ours = (e) => e.host === `127.0.0.1:${srv.port}`;
      const foreign = srv.log.filter((e) => !ours(e));
      const browserOwn = foreign.filter((e) => browserOwnHosts.has(hostname(e.host)));
      const other = foreign.filter((e) => !browserOwnHosts.has(hostname(e.host)));
      check(other.length === 0, `requests to other hosts: ${JSON.stringify(other)}`);
      check(browserOwn.every((e) => e.status === 502), "a request of the browser's own was not refused");
      const unexpected = srv.log.filter(ours).filter((e) => !(e.path === "/article.html" || e.path === `/${MODEL_NAME}` || e.path.startsWith(`/${EMBED_DIR}/`)));
      check(unexpected.length === 0, `unexpected requests: ${JSON.stringify(unexpected)}`);
      const articleReqs = srv.log.filter((e) => e.path === "/article.html").length;
      check(articleReqs === 1, `the article was requested ${articleReqs} times (once expected: the test's navigation)`);
      check(srv.log.every((e) => e.proxied), "a request bypassed the logging proxy");
      check(modelReqs() === modelRequestsAfterFirst, "the model was fetched again after the first load");
      check(srv.log.filter((e) => e.path.startsWith(`/${EMBED_DIR}/`)).length === embedRequests, "the embedding model was fetched again");
      // Playwright's view (pages and their workers): extension pages requested nothing but their own files and the model.
      const fromExt = pwRequests.filter((r) => r.from.startsWith("chrome-extension://") || r.url.startsWith("chrome-extension://"));
      const extNetwork = fromExt.filter((r) => !r.url.startsWith("chrome-extension://") && r.url !== modelUrl && !r.url.startsWith(`${base}/${EMBED_DIR}/`));
      check(extNetwork.length === 0, `extension pages requested ${JSON.stringify(extNetwork)}`);
      const byPath = srv.log.filter(ours).map((e) => `${e.method} ${e.path}${e.range ? ` (${e.range})` : ""} ${e.status}`);
      const pwModel = pwRequests.filter((r) => r.url === modelUrl).length;
      return (
        `${srv.log.filter(ours).length} requests to the test server: ${byPath.join("; ")}; ` +
        `${browserOwn.length} of the browser's own (${[...new Set(browserOwn.map((e) => hostname(e.host)))].join(", ") || "none"}), refused; ` +
        `Playwright saw ${pwRequests.length} requests (${pwModel} for the model), none from the extension but the model`
      );
    });

    const errors = consoleLines.filter((l) => /^(error|pageerror)/.test(l));
    if (errors.length) log(`panel console errors:\n  ${errors.join("\n  ")}`);
  } catch (err) {
    if (!(err instanceof Failure) && !results.some((r) => !r.ok)) log(`FAIL ${err?.stack ?? err}`);
    process.exitCode = 1;
  } finally {
    await context?.close().catch(() => {});
    srv.server.closeAllConnections?.();
    srv.server.close();
    if (KEEP) log(`kept ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
  const failed = results.filter((r) => !r.ok).length || process.exitCode ? 1 : 0;
  log(`${failed ? "FAIL" : "PASS"} extension: ${results.filter((r) => r.ok).length}/${results.length} steps passed in ${secs(Date.now() - t0)} s`);
  process.exitCode = failed;
}

/** The pasted schema of step 6c: one or two short items, so even a random model completes it in EXTRACT_TOKENS. */
const SMALL_SCHEMA = {
  type: "object",
  properties: {
    animals: {
      type: "array",
      minItems: 1,
      maxItems: 2,
      items: {
        type: "object",
        properties: { name: { type: "string", maxLength: 12 }, home: { type: "string", maxLength: 12 } },
        required: ["name", "home"],
        additionalProperties: false,
      },
    },
  },
  required: ["animals"],
  additionalProperties: false,
};

/** The problems of `value` against `schema` (ajv, with formats such as "date"); [] if it validates. */
function validate(schema, value) {
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  return ajv.validate(schema, value) ? [] : ajv.errors.map((e) => `${e.instancePath || "$"} ${e.message}`);
}

await main();
