#!/usr/bin/env node
// No code from strings anywhere in the package or the apps: they must run under a Content-Security-Policy
// without 'unsafe-eval' (script-src 'self' 'wasm-unsafe-eval'; see docs/reliability.md, "Privacy and
// security"). Scans pkg/ (index.js, src/, scripts/, the built pkg/wasm/*.js when present; not
// node_modules) and www/ (.js/.mjs/.cjs, and .html/.svg for inline scripts) with a small JavaScript
// tokenizer that skips comments, strings, template text and regular expressions, and fails naming
// file:line for:
//   eval(…)  ·  new Function / Function(…)  ·  setTimeout/setInterval/setImmediate with a string or
//   template first argument  ·  import() / new Worker() / new SharedWorker() of a data: or blob: URL
//   (a string, a template, or URL.createObjectURL(…))  ·  in HTML/SVG: inline <script> bodies, on*=
//   event-handler attributes and javascript: URLs (all blocked by script-src 'self').
// Before scanning, the checker runs on built-in snippets (each bad one must be found, no good one may
// be), so it cannot quietly turn into a no-op.
//
//   node tests/package/no-eval.mjs              the repository's pkg/ and www/
//   node tests/package/no-eval.mjs FILE|DIR …   those instead (e.g. to see it fail on a file with eval)

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const JS_EXT = new Set([".js", ".mjs", ".cjs"]);
const HTML_EXT = new Set([".html", ".htm", ".svg"]);
const SKIP_DIRS = new Set(["node_modules", ".git"]);

// ---------------------------------------------------------------------------------------------
// Tokenizer: identifiers, punctuators, numbers, strings, template parts and regex literals, each with
// its line. Good enough for well-formed modern JavaScript; it does not need to parse, only to know
// what is code and what is text.

const REGEX_AFTER_WORDS = new Set([
  "return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw", "case", "do", "else", "yield", "await",
]);
const PUNCT3 = [">>>=", "...", "===", "!==", "**=", "<<=", ">>=", ">>>", "&&=", "||=", "??="];
const PUNCT2 = ["=>", "==", "!=", "<=", ">=", "&&", "||", "??", "?.", "++", "--", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "**", "<<", ">>"];

export function tokenize(src) {
  const tokens = [];
  const braces = []; // "{" or "${" (a template expression: its "}" resumes the template)
  let i = 0;
  let line = 1;
  const n = src.length;
  const push = (type, value, startLine) => tokens.push({ type, value, line: startLine });
  const prevSignificant = () => tokens[tokens.length - 1];
  const regexAllowed = () => {
    const t = prevSignificant();
    if (!t) return true;
    if (t.type === "ident") return REGEX_AFTER_WORDS.has(t.value);
    if (t.type === "punct") return !(t.value === ")" || t.value === "]");
    return false; // after a number, string, template or regex: division
  };
  const isIdStart = (c) => /[A-Za-z_$\u0080-\uffff]/.test(c);
  const isId = (c) => /[A-Za-z0-9_$\u0080-\uffff]/.test(c);

  /** Scan template text from i (just after ` or }) to its end (`) or the next ${. */
  const templatePart = (continued) => {
    const startLine = line;
    let text = "";
    while (i < n) {
      const c = src[i];
      if (c === "\\") {
        text += src.slice(i, i + 2);
        if (src[i + 1] === "\n") line++;
        i += 2;
        continue;
      }
      if (c === "`") {
        i++;
        tokens.push({ type: "template", value: text, line: startLine, continued, open: false });
        return;
      }
      if (c === "$" && src[i + 1] === "{") {
        i += 2;
        braces.push("${");
        tokens.push({ type: "template", value: text, line: startLine, continued, open: true });
        return;
      }
      if (c === "\n") line++;
      text += c;
      i++;
    }
    tokens.push({ type: "template", value: text, line: startLine, continued, open: false });
  };

  if (src.startsWith("#!")) while (i < n && src[i] !== "\n") i++;
  while (i < n) {
    const c = src[i];
    if (c === "\n") {
      line++;
      i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v" || c === "\ufeff" || c === "\u00a0") {
      i++;
      continue;
    }
    if (c === "/" && src[i + 1] === "/") {
      while (i < n && src[i] !== "\n") i++;
      continue;
    }
    if (c === "/" && src[i + 1] === "*") {
      const end = src.indexOf("*/", i + 2);
      const stop = end < 0 ? n : end + 2;
      for (let k = i; k < stop; k++) if (src[k] === "\n") line++;
      i = stop;
      continue;
    }
    if (c === '"' || c === "'") {
      const startLine = line;
      let text = "";
      i++;
      while (i < n && src[i] !== c && src[i] !== "\n") {
        if (src[i] === "\\") {
          if (src[i + 1] === "\n") line++;
          text += src.slice(i, i + 2);
          i += 2;
          continue;
        }
        text += src[i++];
      }
      i++;
      push("string", text, startLine);
      continue;
    }
    if (c === "`") {
      i++;
      templatePart(false);
      continue;
    }
    if (c === "/" && regexAllowed()) {
      const startLine = line;
      let text = "";
      let inClass = false;
      i++;
      while (i < n && src[i] !== "\n") {
        const d = src[i];
        if (d === "\\") {
          text += src.slice(i, i + 2);
          i += 2;
          continue;
        }
        if (d === "[") inClass = true;
        else if (d === "]") inClass = false;
        else if (d === "/" && !inClass) break;
        text += d;
        i++;
      }
      i++;
      while (i < n && isId(src[i])) i++; // flags
      push("regex", text, startLine);
      continue;
    }
    if (/[0-9]/.test(c) || (c === "." && /[0-9]/.test(src[i + 1] ?? ""))) {
      const start = i;
      while (i < n && /[0-9A-Za-z_.]/.test(src[i])) {
        if ((src[i] === "e" || src[i] === "E") && (src[i + 1] === "+" || src[i + 1] === "-")) i++;
        i++;
      }
      push("number", src.slice(start, i), line);
      continue;
    }
    if (isIdStart(c) || c === "\\") {
      const start = i;
      i++;
      while (i < n && (isId(src[i]) || src[i] === "\\")) i++;
      push("ident", src.slice(start, i), line);
      continue;
    }
    if (c === "#" && isIdStart(src[i + 1] ?? "")) {
      const start = i; // private name
      i++;
      while (i < n && isId(src[i])) i++;
      push("ident", src.slice(start, i), line);
      continue;
    }
    if (c === "{") {
      braces.push("{");
      push("punct", "{", line);
      i++;
      continue;
    }
    if (c === "}") {
      const open = braces.pop();
      i++;
      if (open === "${") templatePart(true);
      else push("punct", "}", line);
      continue;
    }
    const p = PUNCT3.find((x) => src.startsWith(x, i)) ?? PUNCT2.find((x) => src.startsWith(x, i)) ?? c;
    push("punct", p, line);
    i += p.length;
  }
  tokens.unbalanced = braces.length; // > 0: the tokenizer lost track (a misread regex or template)
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Rules on the token stream.

const TIMERS = new Set(["setTimeout", "setInterval", "setImmediate"]);
const isCodeUrl = (t) => (t?.type === "string" || (t?.type === "template" && !t.continued)) && /^\s*(data|blob):/i.test(t.value);

/** Findings [{line, what}] in JavaScript source; `lineOffset` shifts lines (inline scripts). */
export function checkJs(src, lineOffset = 0) {
  const t = tokenize(src);
  const out = [];
  const at = (k) => t[k];
  const is = (k, type, value) => t[k]?.type === type && (value === undefined || t[k].value === value);
  const add = (k, what) => out.push({ line: t[k].line + lineOffset, what });
  if (t.unbalanced) out.push({ line: (t.at(-1)?.line ?? 1) + lineOffset, what: "unbalanced braces: the checker could not read this file (fix the tokenizer, or the file)" });
  for (let k = 0; k < t.length; k++) {
    const tok = at(k);
    if (tok.type !== "ident") continue;
    const member = is(k - 1, "punct", ".") || is(k - 1, "punct", "?.");
    // eval(…), window.eval(…), globalThis["eval"] is out of reach of a tokenizer and of any sane code.
    if (tok.value === "eval" && is(k + 1, "punct", "(")) add(k, "eval(…)");
    else if (tok.value === "eval" && member && !is(k + 1, "punct", "(")) add(k, "a reference to eval");
    if (tok.value === "Function" && is(k - 1, "ident", "new")) add(k, "new Function");
    else if (tok.value === "Function" && is(k + 1, "punct", "(")) add(k, "Function(…)");
    if (TIMERS.has(tok.value) && is(k + 1, "punct", "(") && (is(k + 2, "string") || is(k + 2, "template"))) {
      add(k, `${tok.value} with a string (code) argument`);
    }
    const loader =
      (tok.value === "import" && is(k + 1, "punct", "(") && !member) ||
      ((tok.value === "Worker" || tok.value === "SharedWorker") && is(k - 1, "ident", "new") && is(k + 1, "punct", "("));
    if (loader) {
      const arg = at(k + 2);
      if (isCodeUrl(arg)) add(k, `${tok.value === "import" ? "import()" : `new ${tok.value}()`} of a ${arg.value.trim().split(":")[0]}: URL`);
      else if (is(k + 2, "ident", "URL") && is(k + 3, "punct", ".") && is(k + 4, "ident", "createObjectURL")) {
        add(k, `${tok.value === "import" ? "import()" : `new ${tok.value}()`} of a blob: URL (URL.createObjectURL)`);
      }
    }
  }
  return out;
}

/** Findings in HTML/SVG: inline scripts (and code from strings in them), handler attributes, javascript: URLs. */
export function checkHtml(src) {
  // Comments out, newlines kept, so lines stay right.
  const text = src.replace(/<!--[\s\S]*?-->/g, (m) => m.replace(/[^\n]/g, " "));
  const lineOf = (idx) => text.slice(0, idx).split("\n").length;
  const out = [];
  for (const m of text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script\s*>/gi)) {
    const attrs = m[1];
    const body = m[2];
    const type = /\btype\s*=\s*["']?([^"'\s>]+)/i.exec(attrs)?.[1]?.toLowerCase();
    const data = type && /json|importmap|speculationrules|text\/plain|template/.test(type);
    if (body.trim() && !data) {
      const bodyLine = lineOf(m.index + m[0].indexOf(">") + 1);
      out.push({ line: bodyLine, what: "an inline <script> (blocked by script-src 'self': move it to a file)" });
      for (const f of checkJs(body, bodyLine - 1)) out.push(f);
    }
  }
  for (const m of text.matchAll(/<[a-zA-Z][^>]*?\s(on[a-zA-Z]+)\s*=/g)) {
    out.push({ line: lineOf(m.index + m[0].length), what: `an inline event handler ${m[1]}= (blocked by script-src 'self')` });
  }
  for (const m of text.matchAll(/\b(?:href|src|action|formaction|xlink:href)\s*=\s*["']?\s*javascript:/gi)) {
    out.push({ line: lineOf(m.index), what: "a javascript: URL (blocked by script-src 'self')" });
  }
  return out;
}

export function checkFile(file) {
  const src = fs.readFileSync(file, "utf8");
  const ext = path.extname(file).toLowerCase();
  if (JS_EXT.has(ext)) return checkJs(src);
  if (HTML_EXT.has(ext)) return checkHtml(src);
  return [];
}

function* walk(p) {
  const st = fs.statSync(p);
  if (st.isFile()) {
    yield p;
    return;
  }
  for (const e of fs.readdirSync(p, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) yield* walk(path.join(p, e.name));
    } else if (e.isFile()) {
      const ext = path.extname(e.name).toLowerCase();
      if ((JS_EXT.has(ext) && !e.name.endsWith(".d.ts")) || HTML_EXT.has(ext)) yield path.join(p, e.name);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Self-test: the checker finds each bad snippet and nothing in the good ones.

const BAD = [
  ['eval("1 + 1")', "eval"],
  ["const f = window.eval; f(x)", "reference to eval"],
  ['const g = new Function("a", "return a")', "new Function"],
  ['Function("return this")()', "Function(…)"],
  ["setTimeout('alert(1)', 10)", "setTimeout"],
  ["setInterval(`tick(${n})`, 100)", "setInterval"],
  ['await import("data:text/javascript,export default 1")', "import() of a data: URL"],
  ["await import(`blob:${origin}/x`)", "import() of a blob: URL"],
  ["await import(URL.createObjectURL(new Blob([code])))", "createObjectURL"],
  ['new Worker("data:text/javascript,postMessage(1)")', "new Worker() of a data: URL"],
  ["const x = a / b; eval(s)", "eval"],
  ["const re = /[/]eval/; eval(s)", "eval"],
  ["const t = `${ { a: 1 }.a }`; eval(s)", "eval"],
];
const GOOD = [
  '// eval("x"); new Function("y")\n/* Function("z") setTimeout("a") */',
  'const s = "eval(" + x + ") new Function(";',
  "const t = `Function(${a}) eval(` + 'setTimeout(\"x\")';",
  "if (/eval\\(|new Function/.test(s)) report(s);",
  "const r = a / b / c; page.evaluate(() => 1); obj.evaluate(x);",
  "setTimeout(() => f(), 10); setInterval(tick, 5); await import(\"./a.js\"); await import(new URL(\"b.js\", base).href);",
  'if (typeof f === "function") g(); class A { #eval = 1; m() { return this.#eval; } }',
  "const w = new Worker(new URL(\"./w.js\", import.meta.url), { type: \"module\" });",
  "const html = `<p>${esc(x)}</p>`; const y = `a${`b${c}`}d`; const o = { Function: 1 }.Function;",
  "x = y // eval(z)\n/ 2;",
];
const BAD_HTML = [
  ['<p>hi</p>\n<script>\nconsole.log(1)\n</script>', "inline <script>", 2],
  ['<button onclick="go()">x</button>', "onclick", 1],
  ['<a href="javascript:void(0)">x</a>', "javascript:", 1],
];
const GOOD_HTML = [
  '<!-- <script>eval(1)</script> onclick= -->\n<script type="module" src="app.js"></script>\n<script type="application/json">{"a":1}</script>\n<p>Use online tools</p>',
];

function selfTest() {
  const problems = [];
  for (const [src, want] of BAD) {
    const f = checkJs(src);
    if (!f.some((x) => x.what.includes(want))) problems.push(`not found: ${want} in ${JSON.stringify(src)} (got ${JSON.stringify(f)})`);
  }
  for (const src of GOOD) {
    const f = checkJs(src);
    if (f.length) problems.push(`false alarm in ${JSON.stringify(src)}: ${JSON.stringify(f)}`);
  }
  for (const [src, want, line] of BAD_HTML) {
    const f = checkHtml(src);
    if (!f.some((x) => x.what.includes(want) && x.line === line)) problems.push(`HTML not found: ${want} at line ${line} in ${JSON.stringify(src)} (got ${JSON.stringify(f)})`);
  }
  for (const src of GOOD_HTML) {
    const f = checkHtml(src);
    if (f.length) problems.push(`HTML false alarm: ${JSON.stringify(f)}`);
  }
  // Lines survive multi-line comments, strings and templates.
  const f = checkJs("/*\n\n*/ const a = `x\ny`;\n'\\\n';\neval(1)");
  if (f[0]?.line !== 7) problems.push(`line numbers: expected eval at line 7, got ${JSON.stringify(f)}`);
  return problems;
}

// ---------------------------------------------------------------------------------------------

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const problems = selfTest();
  if (problems.length) {
    console.log(`FAIL no-eval self-test:\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  const args = process.argv.slice(2);
  const roots = args.length ? args.map((a) => path.resolve(a)) : ["pkg", "www"].map((d) => path.join(REPO, d));
  const files = roots.flatMap((r) => [...walk(r)]);
  const findings = [];
  for (const file of files) for (const f of checkFile(file)) findings.push(`${path.relative(process.cwd(), file)}:${f.line}: ${f.what}`);
  const built = fs.existsSync(path.join(REPO, "pkg/wasm/webgpu_llm.js"));
  const note = args.length ? "" : built ? " (pkg/wasm glue included)" : " (pkg/wasm/ not built: its glue was not scanned)";
  if (findings.length) {
    console.log(`FAIL no-eval: code from strings (breaks under a CSP without 'unsafe-eval'):\n  ${findings.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`PASS no-eval: ${files.length} files, no eval / new Function / string timers / data:|blob: imports${note}; self-test ${BAD.length + BAD_HTML.length} bad and ${GOOD.length + GOOD_HTML.length} good snippets`);
}
