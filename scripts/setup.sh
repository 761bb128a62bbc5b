#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine; quick when already done.
# - a Vulkan driver: lavapipe (Mesa's CPU Vulkan) unless a real GPU driver is present
# - the wasm32 target for the browser build
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  echo "setup: installing the Vulkan loader and Mesa drivers (lavapipe)"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust with rustup first" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
# wgpu/Mesa warn without a runtime dir on headless machines.
mkdir -p "${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
