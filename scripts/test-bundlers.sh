#!/usr/bin/env bash
# The npm package as users get it: `npm pack` (its prepack check refuses a missing or stale wasm/), the
# tarball installed into a fresh Vite app and a fresh webpack 5 app (pinned versions, lockfiles in
# tests/browser/bundlers/), production builds with no bundler configuration for the package, served and
# run in headless Chromium: the page engine and both worker engines generate tokens
# (tests/browser/bundlers.mjs). Needs `bash scripts/setup.sh` (Chromium, the wasm32 target,
# wasm-bindgen) and the npm registry (vite, webpack; about 80 MB into npm's cache).
#   bash scripts/test-bundlers.sh [--only prepack,vite,webpack] [--keep] [--verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/playwright-core ] && [ -d node_modules/binaryen ] || npm install --no-audit --no-fund >/dev/null
# Rebuild pkg/wasm/ only when the check says it is missing or stale (scripts/test-browser.sh just built it).
node pkg/scripts/prepack-check.mjs --quiet 2>/dev/null || bash scripts/build-pkg.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
mkdir -p "$XDG_RUNTIME_DIR"
out=$(mktemp -d "${TMPDIR:-/tmp}/webgpu-llm-pack-XXXXXX")
trap 'rm -rf "$out"' EXIT
# The real `npm pack` in pkg/, prepack check included.
(cd pkg && npm pack --loglevel=warn --pack-destination "$out" >/dev/null)
node tests/browser/bundlers.mjs --tarball "$out"/webgpu-llm-*.tgz "$@"
