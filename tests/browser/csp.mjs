// The chat app (www/app/) under the strict Content-Security-Policy, and every request it makes, in headless
// Chromium (SwiftShader WebGPU) driven by playwright-core. Needs pkg/wasm/ (bash scripts/build-pkg.sh);
// the model is the tiny K-quant fixture (tests/fixtures/kquant/tiny-q4_k_m.gguf, 0.8 MB, with a chat
// template), served from a second origin — the "model origin" of the policy — with CORS.
//
//   node tests/browser/csp.mjs [--keep] [--verbose]
//
// Servers: the app server is scripts/serve.mjs with its strict policy for that model origin
// (strictCsp([modelOrigin])) plus `report-uri /__csp-report`, so a violation anywhere — the page, the
// engine's worker, the service worker — arrives here as a report. The browser sends *all* its traffic
// through this test's logging proxy (--proxy-server, loopback not bypassed): the proxy hands requests
// for the app's origin to serve.mjs and for the model origin to the model server, and refuses anything
// else (502; CONNECT too), logging all of it.
//
// Steps (PASS/FAIL lines; exit status 1 on any failure):
//   headers   the page, the engine worker's script, the package's worker and the service worker are sent
//             with exactly that policy; index.html carries the <meta> policy too
//   open      a fresh profile opens the app: welcome screen, service worker active, then 2 s idle; every
//             request so far is to the app's origin, for /www/app/ or /pkg/ files; no model request (the
//             app loads no model until the user picks one)
//   load      the user picks "From a URL" with the model origin's GGUF: it loads in the worker; the new
//             requests are the model file (model origin) and app files
//   chat      a prompt gets a streamed reply; chatting makes no request at all (the prompt, with a marker,
//             appears in no URL)
//   reopen    a reload starts the model the user loaded before from the device's copy (the app says so on
//             open: "saved on this device"): no request to the model origin
//   csp       zero securitypolicyviolation events in the pages, zero CSP reports (workers, service worker),
//             zero CSP console messages; then controls: a fetch to a third origin from the page and from the
//             engine worker is blocked and reported — so the counting works and connect-src is enforced
//   network   Playwright's view (pages, workers, service worker) shows requests only to the app's origin
//             and the model origin; the proxy saw no request bypass it; other hosts it saw are the
//             browser's own (no page or worker made them: Chromium's updater), all refused
//   meta-only the app from a server that sends no policy (a static host): the <meta> policy alone is
//             enforced on the page (the same control is blocked), the app starts with zero violations
// Environment: CHROMIUM (default /usr/lib/chromium/chromium), BROWSER_TEST_TMP (parent of the temp profile).

import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve, strictCsp } from "../../scripts/serve.mjs";
import { BROWSER_ARGS, CHROMIUM, Failure, KEEP, VERBOSE, check, log, secs, t0 } from "./common.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const MODEL_FILE = path.join(REPO, "tests/fixtures/kquant/tiny-q4_k_m.gguf");
const MODEL_NAME = path.basename(MODEL_FILE);
const REPORT_PATH = "/__csp-report";
const MARKER = "zebra-7391";

if (!fs.existsSync(path.join(REPO, "pkg/wasm/webgpu_llm.js"))) {
  console.log("FAIL setup: pkg/wasm/ is missing (bash scripts/build-pkg.sh)");
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// The model origin: one GGUF with CORS and Range (as a model host such as a CDN would serve it).

function modelHandler(req, res) {
  const cors = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Range, If-Range",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified",
  };
  const pathname = new URL(req.url, "http://x").pathname;
  if (req.method === "OPTIONS") return res.writeHead(204, { ...cors, "Access-Control-Allow-Methods": "GET, HEAD" }).end();
  if (pathname !== `/${MODEL_NAME}` || (req.method !== "GET" && req.method !== "HEAD")) return res.writeHead(404, cors).end();
  const st = fs.statSync(MODEL_FILE);
  const size = st.size;
  const headers = {
    ...cors,
    "Content-Type": "application/octet-stream",
    "Accept-Ranges": "bytes",
    ETag: `"${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`,
    "Cache-Control": "no-store",
  };
  let start = 0;
  let end = size - 1;
  let status = 200;
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
  if (m) {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (start >= size || start > end) return res.writeHead(416, { ...cors, "Content-Range": `bytes */${size}` }).end();
    status = 206;
    headers["Content-Range"] = `bytes ${start}-${end}/${size}`;
  }
  headers["Content-Length"] = String(end - start + 1);
  res.writeHead(status, headers);
  if (req.method === "HEAD") return res.end();
  fs.createReadStream(MODEL_FILE, { start, end }).pipe(res);
}

const listen = (server) => new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
const modelServer = http.createServer(modelHandler);
const modelPort = await listen(modelServer);
const MODEL_ORIGIN = `http://127.0.0.1:${modelPort}`;
const MODEL_URL = `${MODEL_ORIGIN}/${MODEL_NAME}`;

// The app's origin: scripts/serve.mjs with the strict policy for that model origin, plus a report-uri.
const POLICY = strictCsp([MODEL_ORIGIN]);
const app = await serve({ root: REPO, port: 0, csp: `${POLICY}; report-uri ${REPORT_PATH}` });
const APP_HOST = new URL(app.origin).host;
// A second app server without the policy header (a static host): only index.html's <meta> applies.
const plain = await serve({ root: REPO, port: 0 });
const PLAIN_HOST = new URL(plain.origin).host;
const direct = []; // requests that reached the app servers without the proxy
for (const s of [app, plain]) s.server.on("request", (req) => req.viaProxy || direct.push(req.url));

// ---------------------------------------------------------------------------------------------
// The logging proxy in front of everything the browser does.

const proxyLog = []; // {t, method, host, path, range, status}
const cspReports = []; // parsed bodies of POSTs to REPORT_PATH
const proxy = http.createServer((req, res) => {
  const proxied = /^[a-z][a-z0-9+.-]*:\/\//i.test(req.url);
  const url = new URL(req.url, "http://not-proxied.invalid");
  const entry = { t: Date.now(), method: req.method, host: url.host, path: url.pathname, range: req.headers.range ?? null, proxied, status: 0 };
  proxyLog.push(entry);
  res.on("finish", () => (entry.status = res.statusCode));
  if ((url.host === APP_HOST || url.host === PLAIN_HOST) && url.pathname === REPORT_PATH && req.method === "POST") {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      try {
        const j = JSON.parse(body);
        cspReports.push(j["csp-report"] ?? j);
      } catch {
        cspReports.push({ unparsed: body });
      }
      res.writeHead(204).end();
    });
    return;
  }
  req.viaProxy = true;
  if (url.host === APP_HOST) return app.server.emit("request", req, res);
  if (url.host === PLAIN_HOST) return plain.server.emit("request", req, res);
  if (url.host === `127.0.0.1:${modelPort}`) return modelHandler(req, res);
  res.writeHead(502).end(); // nothing leaves this machine
});
proxy.on("connect", (req, socket) => {
  proxyLog.push({ t: Date.now(), method: "CONNECT", host: req.url, path: "", range: null, proxied: true, status: 502 });
  socket.end("HTTP/1.1 502 Bad Gateway\r\n\r\n");
});
const proxyPort = await listen(proxy);
log(`app ${app.appUrl} (policy header), plain ${plain.appUrl} (no header), model ${MODEL_URL}, proxy :${proxyPort}`);

// ---------------------------------------------------------------------------------------------
// Browser.

const tmp = fs.mkdtempSync(path.join(process.env.BROWSER_TEST_TMP ?? os.tmpdir(), "webgpu-llm-csp-"));
const xdg = path.join(tmp, "xdg");
fs.mkdirSync(xdg);
const context = await chromium.launchPersistentContext(path.join(tmp, "profile"), {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1280, height: 800 },
  env: { ...process.env, XDG_RUNTIME_DIR: xdg, PW_EXPERIMENTAL_SERVICE_WORKER_NETWORK_EVENTS: "1" },
  args: [
    ...BROWSER_ARGS,
    `--proxy-server=http://127.0.0.1:${proxyPort}`,
    "--proxy-bypass-list=<-loopback>", // 127.0.0.1 through the proxy too (Chrome bypasses loopback by default)
  ],
});

const violations = []; // securitypolicyviolation events in pages
const consoleLines = [];
const cspConsole = [];
const pwRequests = []; // every request Playwright saw: pages, their workers, the service worker
context.on("request", (r) => pwRequests.push({ url: r.url(), method: r.method(), t: Date.now() }));
await context.exposeBinding("__cspViolation", ({ page }, v) => violations.push({ ...v, page: page?.url() }));
await context.addInitScript(() => {
  document.addEventListener("securitypolicyviolation", (e) => {
    globalThis.__cspViolation({
      directive: e.effectiveDirective,
      blocked: e.blockedURI,
      source: `${e.sourceFile}:${e.lineNumber}`,
      policy: e.originalPolicy,
      disposition: e.disposition,
    });
  });
});
function watch(page, label) {
  const onLine = (line) => {
    consoleLines.push(line);
    if (/Content[- ]Security[- ]Policy|Refused to|violates the following/i.test(line)) cspConsole.push(line);
    if (VERBOSE) console.log(line);
  };
  page.on("console", (m) => onLine(`[${label} console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => onLine(`[${label} pageerror] ${e.message}`));
  page.on("worker", (w) => w.on("console", (m) => onLine(`[${label} worker console.${m.type()}] ${m.text()}`)));
  return page;
}

const results = [];
let blocked = null;
async function step(name, needs, fn) {
  if (needs && blocked) {
    results.push({ name, ok: false });
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
    if (needs) blocked ??= name;
  }
}

const engineState = (page) => page.evaluate(() => document.getElementById("app").dataset.engine);
async function waitEngine(page, states, timeout) {
  await page.waitForFunction((s) => s.includes(document.getElementById("app").dataset.engine), states, { timeout, polling: 100 });
  return await engineState(page);
}
const since = (mark) => proxyLog.slice(mark);
const describe = (entries) => entries.map((e) => `${e.method} ${e.host}${e.path}${e.range ? ` [${e.range}]` : ""} ${e.status}`).join("; ");
const isAppFile = (e) => e.host === APP_HOST && (e.path.startsWith("/www/app/") || e.path.startsWith("/pkg/")) && (e.method === "GET" || e.method === "HEAD");
const isModel = (e) => e.host === `127.0.0.1:${modelPort}` || e.path.startsWith("/models/") || e.path.endsWith(".gguf");
const short = (n) => (n > 4 ? `${n} requests` : `${n} request${n === 1 ? "" : "s"}`);

const page = watch(await context.newPage(), "app");

await step("headers", true, async () => {
  const want = `${POLICY}; report-uri ${REPORT_PATH}`;
  const files = ["/www/app/", "/www/app/engine-worker.js", "/www/app/sw.js", "/pkg/src/worker.js", "/pkg/wasm/webgpu_llm_bg.wasm"];
  for (const f of files) {
    const r = await fetch(app.origin + f, { method: "HEAD" });
    check(r.ok, `${f}: HTTP ${r.status}`);
    check(r.headers.get("content-security-policy") === want, `${f} sent Content-Security-Policy ${JSON.stringify(r.headers.get("content-security-policy"))}, expected ${JSON.stringify(want)}`);
    check(r.headers.get("referrer-policy") === "no-referrer", `${f}: Referrer-Policy ${r.headers.get("referrer-policy")}`);
  }
  const none = await fetch(plain.appUrl, { method: "HEAD" });
  check(!none.headers.get("content-security-policy"), "the plain server sent a policy");
  direct.length = 0; // these were the test's own
  const html = fs.readFileSync(path.join(REPO, "www/app/index.html"), "utf8");
  const meta = /<meta\s+http-equiv="Content-Security-Policy"\s+content="([^"]+)"/i.exec(html)?.[1];
  check(meta, "www/app/index.html has no Content-Security-Policy <meta>");
  for (const d of ["default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "connect-src 'self'"]) check(meta.includes(d), `the <meta> policy lacks ${d}: ${meta}`);
  const firstScript = html.search(/<script|<link/i);
  check(html.indexOf("Content-Security-Policy") < firstScript, "the <meta> policy comes after a script or link (it must come first to cover them)");
  return `${files.length} files with "${POLICY}" (+ report-uri); <meta>: "${meta}"`;
});

await step("open", true, async () => {
  const resp = await page.goto(app.appUrl);
  const header = (await resp.allHeaders())["content-security-policy"];
  check(header?.startsWith(POLICY), `the browser got the page with Content-Security-Policy ${JSON.stringify(header)}`);
  await page.waitForFunction(() => document.getElementById("app").dataset.ready === "true", null, { timeout: 30_000 });
  const state = await engineState(page);
  check(state === "none", `engine state ${state}, expected "none" (the welcome screen) on a fresh profile`);
  check(await page.isVisible("#welcome"), "the welcome card is not visible");
  const sw = await page.evaluate(async () => {
    const reg = await Promise.race([navigator.serviceWorker.ready, new Promise((r) => setTimeout(() => r(null), 30_000))]);
    return reg?.active?.state ?? null;
  });
  check(sw === "activated" || sw === "activating", `service worker ${sw}`);
  await page.waitForTimeout(2000); // anything the app does on its own after starting
  const all = since(0).filter((e) => e.host === APP_HOST || e.host === `127.0.0.1:${modelPort}`);
  const model = all.filter(isModel);
  check(model.length === 0, `model requests before the user chose a model: ${describe(model)}`);
  const odd = all.filter((e) => !isAppFile(e) && e.path !== REPORT_PATH);
  check(odd.length === 0, `requests that are not the app's or the package's files: ${describe(odd)}`);
  const paths = new Set(all.map((e) => e.path));
  return `${short(all.length)} to the app's origin (${paths.size} files: /www/app/ and /pkg/), none for a model; service worker ${sw}`;
});

let loadMark = 0;
await step("load", true, async () => {
  loadMark = proxyLog.length;
  await page.click("#choose-model");
  await page.waitForSelector("#model-dialog[open]");
  await page.check('input[name=source][value="url"]');
  await page.fill("#model-url", MODEL_URL);
  await page.click("#model-load");
  const state = await waitEngine(page, ["ready", "error"], 120_000);
  if (state !== "ready") throw new Failure(`load failed: ${await page.innerText("#notice")}`);
  const mine = since(loadMark).filter((e) => e.host === APP_HOST || e.host === `127.0.0.1:${modelPort}`);
  const model = mine.filter((e) => e.host === `127.0.0.1:${modelPort}`);
  check(model.length > 0, "the model was not requested from the model origin");
  check(model.every((e) => e.path === `/${MODEL_NAME}`), `other requests to the model origin: ${describe(model)}`);
  const odd = mine.filter((e) => e.host === APP_HOST && !isAppFile(e) && e.path !== REPORT_PATH);
  check(odd.length === 0, `unexpected requests while loading: ${describe(odd)}`);
  return `${await page.textContent("#model-chip-text")}: ${describe(model)}; ${short(mine.length - model.length)} for app files`;
});

await step("chat", true, async () => {
  for (const [id, value] of [["max-tokens", 8], ["temperature", 0]]) {
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
  await page.waitForTimeout(500); // requests the load started (e.g. the service worker's refreshes) settle
  const mark = proxyLog.length;
  await page.fill("#prompt", `Say hello to ${MARKER}.`);
  await page.press("#prompt", "Enter");
  await page.waitForFunction(
    () => {
      const el = [...document.querySelectorAll("#messages .msg.assistant")].at(-1);
      return el && el.dataset.state !== "streaming";
    },
    null,
    { timeout: 120_000, polling: 100 },
  );
  const r = await page.evaluate(() => {
    const el = [...document.querySelectorAll("#messages .msg.assistant")].at(-1);
    return { state: el.dataset.state, text: el.querySelector(".body").textContent };
  });
  check(r.state === "done" && r.text.trim().length > 0, `reply ${r.state}: ${JSON.stringify(r.text)}`);
  const during = since(mark).filter((e) => e.method !== "CONNECT");
  check(during.length === 0, `chatting made requests: ${describe(during)}`);
  const leaked = pwRequests.filter((q) => q.url.includes(MARKER)).concat(proxyLog.filter((e) => e.path.includes(MARKER)));
  check(leaked.length === 0, `the prompt appeared in a request URL: ${JSON.stringify(leaked)}`);
  return `reply ${JSON.stringify(r.text)}; 0 requests while chatting`;
});

await step("reopen", true, async () => {
  const mark = proxyLog.length;
  await page.reload();
  const state = await waitEngine(page, ["ready", "error"], 120_000);
  if (state !== "ready") throw new Failure(`reopen: engine ${state}: ${await page.innerText("#notice").catch(() => "")}`);
  const fromCache = await page.evaluate(() => document.getElementById("app").dataset.modelFromCache);
  check(fromCache === "true", `the model did not load from the device's copy (fromCache ${fromCache})`);
  const model = since(mark).filter(isModel);
  check(model.length === 0, `reopening requested the model: ${describe(model)}`);
  const odd = since(mark).filter((e) => (e.host === APP_HOST && !isAppFile(e) && e.path !== REPORT_PATH));
  check(odd.length === 0, `unexpected requests on reopening: ${describe(odd)}`);
  return `the model the user loaded before started from this device's copy with 0 model requests (${short(since(mark).filter((e) => e.host === APP_HOST).length)} for app files)`;
});

await step("csp", false, async () => {
  await page.waitForTimeout(1000); // reports are sent asynchronously
  const seen = { events: violations.slice(), reports: cspReports.slice(), console: cspConsole.slice() };
  check(
    seen.events.length === 0 && seen.reports.length === 0 && seen.console.length === 0,
    `policy violations: events ${JSON.stringify(seen.events)}; reports ${JSON.stringify(seen.reports)}; console ${JSON.stringify(seen.console)}`,
  );
  // Controls: the same counting sees a blocked fetch from the page and from the engine's worker.
  const pageCtl = "http://127.0.0.2:9/page-control";
  const workerCtl = "http://127.0.0.3:9/worker-control";
  const pageBlocked = await page.evaluate((u) => fetch(u).then(() => "fetched", (e) => e.name), pageCtl);
  const engineWorker = page.workers().find((w) => w.url().endsWith("/www/app/engine-worker.js"));
  check(engineWorker, `no engine worker: ${page.workers().map((w) => w.url())}`);
  const workerBlocked = await engineWorker.evaluate((u) => fetch(u).then(() => "fetched", (e) => e.name), workerCtl);
  check(pageBlocked === "TypeError" && workerBlocked === "TypeError", `control fetches: page ${pageBlocked}, worker ${workerBlocked}`);
  const deadline = Date.now() + 10_000;
  const reported = (u) => cspReports.some((r) => String(r["blocked-uri"] ?? r.blockedURL ?? "").startsWith(u.replace(/\/[^/]*$/, "")));
  while (Date.now() < deadline && !(reported(pageCtl) && reported(workerCtl) && violations.length > 0)) await page.waitForTimeout(100);
  check(violations.some((v) => v.directive === "connect-src" && v.blocked.startsWith("http://127.0.0.2")), `the page's control violation was not seen: ${JSON.stringify(violations)}`);
  check(reported(pageCtl), `no report for the page's control: ${JSON.stringify(cspReports)}`);
  check(reported(workerCtl), `no report for the worker's control (worker violations would go unseen): ${JSON.stringify(cspReports)}`);
  const leak = proxyLog.filter((e) => /^127\.0\.0\.[23]:/.test(e.host));
  check(leak.length === 0, `a blocked control request reached the network: ${describe(leak)}`);
  return `0 violations, 0 reports, 0 CSP console messages; controls blocked and counted (page: event + report, worker: report)`;
});

await step("network", false, async () => {
  const allowed = (u) => {
    const o = new URL(u).origin;
    return o === app.origin || o === MODEL_ORIGIN || o === plain.origin || /^(data|blob|chrome-extension|chrome):/.test(u);
  };
  const controls = (u) => /^http:\/\/127\.0\.0\.[23]:9\//.test(u);
  const foreign = pwRequests.filter((q) => !allowed(q.url) && !controls(q.url));
  check(foreign.length === 0, `the app requested other origins: ${JSON.stringify(foreign)}`);
  check(direct.length === 0, `requests bypassed the logging proxy: ${JSON.stringify(direct)}`);
  // Other hosts in the proxy's log are the browser's own traffic (Chromium's updater and sign-in, even
  // with background networking off) if no page, worker or service worker made them.
  const other = proxyLog.filter((e) => ![APP_HOST, PLAIN_HOST, `127.0.0.1:${modelPort}`].includes(e.host));
  const pwHosts = new Set(pwRequests.map((q) => new URL(q.url).host));
  const fromApp = other.filter((e) => pwHosts.has(e.host) || pwHosts.has(e.host.replace(/:443$/, "")));
  check(fromApp.length === 0, `the app's pages or workers contacted other hosts: ${describe(fromApp)}`);
  check(other.every((e) => e.status === 502), "a request to another host was not refused");
  const hosts = [...new Set(other.map((e) => e.host))];
  const ours = proxyLog.filter((e) => e.host === APP_HOST);
  return (
    `proxy: ${ours.length} to the app's origin, ${proxyLog.filter((e) => e.host === `127.0.0.1:${modelPort}`).length} to the model origin, ` +
    `${other.length} of the browser's own (${hosts.join(", ") || "none"}; no page or worker made them), refused; ` +
    `Playwright: ${pwRequests.length} requests, all to the app's or the model's origin`
  );
});

await step("meta-only", false, async () => {
  const p = watch(await context.newPage(), "meta");
  const before = violations.length;
  const resp = await p.goto(plain.appUrl);
  check(!(await resp.allHeaders())["content-security-policy"], "the plain server sent a policy header");
  await p.waitForFunction(() => document.getElementById("app").dataset.ready === "true", null, { timeout: 30_000 });
  const state = await engineState(p);
  check(state === "none", `engine state ${state} (expected the welcome screen)`);
  await p.evaluate(async () => {
    const reg = await Promise.race([navigator.serviceWorker.ready, new Promise((r) => setTimeout(() => r(null), 30_000))]);
    return reg?.active?.state ?? null;
  });
  await p.waitForTimeout(500);
  const startup = violations.slice(before);
  check(startup.length === 0, `violations under the <meta> policy: ${JSON.stringify(startup)}`);
  const ctl = await p.evaluate(() => fetch("http://127.0.0.2:9/meta-control").then(() => "fetched", (e) => e.name));
  await p.waitForTimeout(300);
  const v = violations.slice(before).find((x) => x.blocked.startsWith("http://127.0.0.2"));
  check(ctl === "TypeError" && v, `the <meta> policy was not enforced: control ${ctl}, violations ${JSON.stringify(violations.slice(before))}`);
  await p.close();
  return `the app starts with 0 violations; a fetch to another origin is blocked by the <meta> policy ("${v.policy}")`;
});

await context.close();
await Promise.all([app.close(), plain.close()]);
proxy.closeAllConnections?.();
proxy.close();
modelServer.close();
if (!KEEP) fs.rmSync(tmp, { recursive: true, force: true });
else log(`kept ${tmp}`);

const failed = results.filter((r) => !r.ok);
if (failed.length && !VERBOSE) {
  console.log("--- browser console (last 30 lines) ---");
  for (const l of consoleLines.slice(-30)) console.log(l);
}
console.log(`${failed.length ? "FAIL" : "PASS"} csp: ${results.length - failed.length}/${results.length} steps passed in ${secs(Date.now() - t0)} s`);
process.exit(failed.length ? 1 : 0);
