#!/usr/bin/env bash
# Quick start, step 1: set up, then run the kernel benchmark on this machine's GPU (lavapipe on a
# machine without one). Extra arguments go to the benchmark (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
# Without arguments: --quick (a CPU Vulkan driver takes ~2 minutes for the full table).
if [ $# -eq 0 ]; then set -- --quick; fi
cargo run --release --bin bench-kernels -- "$@"
