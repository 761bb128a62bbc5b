// What the browser test runners (run.mjs, faults.mjs, csp.mjs) share: command-line flags, timestamped
// logging, checks, Chromium's launch flags and the scenario loop with its PASS/FAIL lines.

import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/lib/chromium/chromium";

const argv = process.argv.slice(2);
export const flag = (f) => argv.includes(f);
/** `--name value` or `--name=value`; undefined when absent. */
export const optArg = (name) => {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return argv[i].includes("=") ? argv[i].split("=").slice(1).join("=") : argv[i + 1];
};
export const ONLY = optArg("--only")?.split(",").filter(Boolean);
export const KEEP = flag("--keep");
export const VERBOSE = flag("--verbose");

export const t0 = Date.now();
export const secs = (ms) => (ms / 1000).toFixed(1);
export const log = (...a) => console.log(`[${secs(Date.now() - t0).padStart(6)} s]`, ...a);

/** A scenario's expectation that did not hold (printed without a stack). */
export class Failure extends Error {}
export function check(cond, message) {
  if (!cond) throw new Failure(message);
}
export function eqArrays(a, b) {
  return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => x === b[i]);
}
export const errText = (e) => (e ? `${e.code ?? e.name}: ${e.message}` : "(none)");

/** Call `window.H[fn](...args)` (the harness page's helpers) in `page`. */
export const H = (page, fn, ...args) => page.evaluate(([fn, args]) => window.H[fn](...args), [fn, args]);

/** Chromium with SwiftShader WebGPU, and none of its own background traffic that can be turned off. */
export const BROWSER_ARGS = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
];

export async function launch(profileDir, extraArgs = []) {
  return await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BROWSER_ARGS, ...extraArgs],
    viewport: { width: 800, height: 600 },
  });
}

/** A new page at `url` whose harness imported the package, with its console kept in `S.consoleLines`. */
export async function openHarness(S, label, url, { workers = false } = {}) {
  const page = await S.context.newPage();
  const consoleLines = [];
  page.on("console", (m) => {
    const line = `[${label} console.${m.type()}] ${m.text()}`;
    consoleLines.push(line);
    if (VERBOSE) console.log(line);
  });
  page.on("pageerror", (e) => consoleLines.push(`[${label} pageerror] ${e.message}`));
  if (workers) page.on("worker", (w) => consoleLines.push(`[${label}] worker started: ${w.url()}`));
  S.consoleLines = consoleLines;
  await page.goto(url);
  const ready = await page.evaluate(() => window.harnessReady);
  if (!ready.ok) throw new Failure(`harness: importing /pkg/index.js failed: ${JSON.stringify(ready.error)}`);
  return page;
}

export function fmt(F) {
  return Object.entries(F).map(([k, v]) => `${k}=${typeof v === "string" && v.includes(" ") ? JSON.stringify(v) : v}`).join(" ");
}

/** The names to run (`--only`, else all), refusing unknown ones. */
export function wantedScenarios(scenarios) {
  const wanted = ONLY ?? scenarios.map(([n]) => n);
  for (const n of wanted) if (!scenarios.some(([m]) => m === n)) throw new Error(`unknown scenario ${n}`);
  return wanted;
}

/**
 * Run `scenarios` ([name, fn(S, F)]) that `wanted` names, one PASS/FAIL line each with the figures
 * `F` they set. After a failure: the page console's tail, `onFail(S)`, and every page closed so a
 * broken page cannot poison the next scenario. Resolves with `[{name, ok, F, ms, error}]`.
 */
export async function runScenarios(S, scenarios, wanted, onFail = async () => {}) {
  const results = [];
  for (const [name, fn] of scenarios) {
    if (!wanted.includes(name)) continue;
    const F = {};
    const start = Date.now();
    log(`${name}: running`);
    try {
      await fn(S, F);
      results.push({ name, ok: true, F, ms: Date.now() - start });
      console.log(`PASS ${name} (${secs(Date.now() - start)} s) ${fmt(F)}`);
    } catch (e) {
      results.push({ name, ok: false, F, ms: Date.now() - start, error: e });
      console.log(`FAIL ${name} (${secs(Date.now() - start)} s): ${e instanceof Failure ? e.message : e.stack}`);
      if (Object.keys(F).length) console.log(`     figures so far: ${fmt(F)}`);
      const tail = (S.consoleLines ?? []).slice(-30);
      if (tail.length) console.log(`     page console (last ${tail.length}):\n       ${tail.join("\n       ")}`);
      await onFail(S);
      for (const p of S.context.pages()) await p.close().catch(() => {});
    }
  }
  return results;
}
