#!/usr/bin/env bash
# Quick start, step 2: every kernel against its f64 CPU reference on the local GPU (lavapipe here),
# the shader validation, and the wasm32 (browser) build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
cargo test --all-targets
cargo build --lib --target wasm32-unknown-unknown
echo "test.sh: native tests passed and the wasm32 build succeeded"
