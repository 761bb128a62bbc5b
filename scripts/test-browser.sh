#!/usr/bin/env bash
# The npm package (pkg/) and the apps on it (www/app, www/extension) in a real browser: headless Chromium with SwiftShader WebGPU, driven by
# playwright-core (tests/browser/run.mjs; scenarios listed there). Needs `bash scripts/setup.sh`
# (Chromium, the wasm32 target, wasm-bindgen, the default model) once.
#   bash scripts/test-browser.sh [--only name,name] [--keep] [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
# npm deps first: build-pkg.sh's wasm-opt and the runner's playwright-core (never `playwright install`:
# the browser is Debian's Chromium).
[ -d node_modules/playwright-core ] && [ -d node_modules/binaryen ] || npm install --no-audit --no-fund >/dev/null
# Every error code the package raises is documented (pkg/README.md's Troubleshooting); no browser needed.
node tests/package/error-codes.mjs
bash scripts/build-pkg.sh
# No code from strings (eval, new Function, string timers, data:/blob: imports) in pkg/ (with the built glue) and www/.
node tests/package/no-eval.mjs
# The native reference CLI: the dev build `cargo test` already made (same tokens as --release, and no
# second, LTO build of every crate in CI).
cargo build --bin webgpu-llm
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
mkdir -p "$XDG_RUNTIME_DIR"
node tests/browser/run.mjs "$@"
node tests/browser/models.mjs  # tiny Gemma 3 and Qwen3.5 fixtures (f16 packages) give transformers' greedy ids, tokens and chat prompt, page and worker (~75-95 s)
node tests/browser/embeddings.mjs  # all-MiniLM-L6-v2 (f16) against sentence-transformers through embeddings.create, page and worker (~55 s)
node tests/browser/structured.mjs  # JSON Schema / regex / grammar output on the tiny random Qwen3, page and worker (~2 min)
node tests/browser/faults.mjs  # network and cache faults: 500s, a 30 s stall, changed files, quota, damaged cache, CORS (~1 min)
# The apps on the package (screenshots in target/screenshots/).
node tests/browser/app.mjs
# The app under the strict Content-Security-Policy, every request through a logging proxy (~15 s).
node tests/browser/csp.mjs
node tests/browser/extension.mjs
