// Every error code the package can raise is a known ErrorCode and has a row in pkg/README.md's
// Troubleshooting table (and the table names no code that does not exist).
// Codes are raised by the wasm (`js_error("CODE", ...)` in src/web.rs) and by the JS (`new XxxError`,
// `makeError("CODE")`, `ErrorCode.CODE`). Run: node tests/package/error-codes.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { ErrorCode } = await import(path.join(root, "pkg/src/errors.js"));
const known = new Set(Object.values(ErrorCode));
const read = (p) => fs.readFileSync(path.join(root, p), "utf8");
const failures = [];

// Raised by the wasm: string literals given to js_error.
const raised = new Map(); // code → where
for (const m of read("src/web.rs").matchAll(/js_error\(\s*"([A-Z_]+)"/g)) raised.set(m[1], "src/web.rs");
// Raised by the JS: the error classes (one per code) and codes named directly.
const errorsJs = read("pkg/src/errors.js");
const classCode = new Map(
  [...errorsJs.matchAll(/export const (\w+Error) = subclass\("\w+", ErrorCode\.([A-Z_]+)\)/g)].map((m) => [m[1], m[2]]),
);
if (classCode.size !== known.size) failures.push(`errors.js: ${classCode.size} classes for ${known.size} codes`);
const jsFiles = ["pkg/index.js", ...fs.readdirSync(path.join(root, "pkg/src")).filter((f) => f.endsWith(".js")).map((f) => `pkg/src/${f}`)];
for (const f of jsFiles) {
  const src = read(f);
  for (const m of src.matchAll(/new (\w+Error)\(/g)) if (classCode.has(m[1])) raised.set(classCode.get(m[1]), f);
  for (const m of src.matchAll(/ErrorCode\.([A-Z_]+)/g)) raised.set(m[1], f);
  for (const m of src.matchAll(/makeError\(\s*"([A-Z_]+)"/g)) raised.set(m[1], f);
}
for (const [code, where] of raised) if (!known.has(code)) failures.push(`${where} raises ${code}, which is not an ErrorCode (callers would see INTERNAL)`);
if (raised.size < 10) failures.push(`found only ${raised.size} raised codes: the patterns above no longer match the sources`);

// The Troubleshooting table: rows "| `CODE` | cause | what to do |".
const readme = read("pkg/README.md");
const section = readme.split(/^### Troubleshooting$/m)[1]?.split(/^#{2,3} /m)[0];
if (!section) failures.push("pkg/README.md has no '### Troubleshooting' section");
const rows = new Map();
for (const m of (section ?? "").matchAll(/^\| `([A-Z_]+)` \|([^|]*)\|([^|]*)\|\s*$/gm)) rows.set(m[1], [m[2].trim(), m[3].trim()]);
for (const code of new Set([...known, ...raised.keys()])) {
  const row = rows.get(code);
  if (!row) failures.push(`Troubleshooting has no row for ${code}`);
  else if (!row[0] || !row[1]) failures.push(`Troubleshooting row ${code} lacks a cause or what to do`);
}
for (const code of rows.keys()) if (!known.has(code)) failures.push(`Troubleshooting names ${code}, which is not an ErrorCode`);

if (failures.length) {
  console.error(`error-codes: ${failures.length} problem(s):\n  ${failures.join("\n  ")}`);
  process.exit(1);
}
console.log(`error-codes: ${known.size} codes, ${raised.size} raised, all in pkg/README.md's Troubleshooting table`);
