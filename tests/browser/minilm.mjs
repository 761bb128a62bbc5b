// The real all-MiniLM-L6-v2 (scripts/fetch-embedder.sh) as an f16 package, converted by the CLI and
// cached in target/browser-models/minilm/pkg while its inputs are unchanged. Used by embeddings.mjs
// (against sentence-transformers) and extension.mjs ("Find by meaning").

import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const MINILM = path.join(REPO, "models/all-MiniLM-L6-v2");
const CACHE = path.join(REPO, "target/browser-models/minilm");

/** `{pkgDir, cached, seconds?}`; throws when the checkpoint or the CLI is missing or convert fails. */
export function minilmPackage(cli = process.env.WEBGPU_LLM_CLI ?? path.join(REPO, "target/debug/webgpu-llm")) {
  for (const [what, p] of [["all-MiniLM-L6-v2 (bash scripts/fetch-embedder.sh)", path.join(MINILM, "model.safetensors")], ["the CLI (cargo build --bin webgpu-llm)", cli]]) {
    if (!fs.existsSync(p)) throw new Error(`missing ${what}: ${p}`);
  }
  const out = path.join(CACHE, "pkg");
  const inputs = ["model.safetensors", "config.json", "tokenizer.json", "modules.json"].map((f) => path.join(MINILM, f)).concat([cli]);
  const stamp = JSON.stringify(inputs.map((f) => [path.relative(REPO, f), fs.statSync(f).size, fs.statSync(f).mtimeMs]));
  const stampFile = path.join(CACHE, "inputs.json");
  if (fs.existsSync(stampFile) && fs.readFileSync(stampFile, "utf8") === stamp) return { pkgDir: out, cached: true };
  const t = Date.now();
  fs.rmSync(CACHE, { recursive: true, force: true });
  const env = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp/webgpu-llm-xdg" };
  fs.mkdirSync(env.XDG_RUNTIME_DIR, { recursive: true });
  const r = spawnSync(cli, ["convert", "--from", MINILM, "--out", out, "--quant", "f16"], { cwd: REPO, env, encoding: "utf8", timeout: 600_000 });
  if (r.status !== 0) throw new Error(`convert of all-MiniLM-L6-v2 failed (${r.status ?? r.signal}):\n${r.stderr}\n${r.stdout}`);
  fs.writeFileSync(stampFile, stamp);
  return { pkgDir: out, cached: false, seconds: (Date.now() - t) / 1000 };
}
