#!/usr/bin/env bash
# Quick start, step 2: every kernel against its f64 CPU reference on the local GPU (lavapipe here),
# the shader validation, the wasm32 (browser) build, the kernels again in headless Chromium, the npm package
# there, and the packed package in Vite and webpack apps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
cargo test --all-targets
cargo build --lib --target wasm32-unknown-unknown
# The same kernels in headless Chromium (runner set in .cargo/config.toml, flags in webdriver.json).
CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown --test browser_kernels
# The npm package in headless Chromium: native-equal tokens, worker, cache, integrity, 1 GiB memory bound.
bash scripts/test-browser.sh
# The packed package (prepack check) in fresh Vite and webpack 5 apps, production builds in Chromium (~1 min).
bash scripts/test-bundlers.sh
echo "test.sh: native tests, the wasm32 build, the kernels, the npm package in the browser and in Vite/webpack builds passed"
