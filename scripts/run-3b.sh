#!/usr/bin/env bash
# The engine at the size it is built for: a random-weight GGUF with Llama-3.2-3B's exact shapes in
# llama.cpp's Q4_K_M layout (~2 GB, made once by scripts/make-3b-gguf.py into the git-ignored models/),
# generating 8 tokens natively (`webgpu-llm bench --json`) and in headless Chromium through the npm
# package (`scripts/bench-browser.sh --json`: fetch → GPU, tensors over the binding limit split).
# Slow on a machine without a GPU (minutes); not a CI step. Prints one JSON line per run.
#   bash scripts/run-3b.sh [--native-only | --browser-only]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/llama-3.2-3b-shape.Q4_K_M.gguf
if [ ! -f "$MODEL" ]; then
  VENV="${GGUF_VENV:-/tmp/webgpu-llm-ggvenv}"
  [ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q gguf numpy; }
  bash scripts/fetch-tokenizers.sh >/dev/null
  "$VENV/bin/python" scripts/make-3b-gguf.py --out "$MODEL" >&2
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
mkdir -p "$XDG_RUNTIME_DIR"
if [ "${1:-}" != --browser-only ]; then
  cargo build --release --bin webgpu-llm >&2
  target/release/webgpu-llm bench --model "$MODEL" --prompt-tokens 8 --gen-tokens 8 --json
fi
if [ "${1:-}" != --native-only ]; then
  bash scripts/bench-browser.sh --model "$MODEL" --prompt-tokens 8 --gen-tokens 8 --json
fi
