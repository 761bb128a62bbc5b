#!/usr/bin/env bash
# The browser benchmark: builds the npm package's wasm (pkg/wasm, incremental), then runs the engine in
# headless Chromium on a GGUF and prints the fields of `webgpu-llm bench --json` (tests/browser/bench.mjs).
#   bash scripts/bench-browser.sh [--no-build] [--pkg DIR] [--model models/X.gguf] [--prompt-tokens 32]
#        [--gen-tokens 16] [--temperature T --top-p P --top-k K --seed S] [--peer wllama] [--json]
# --pkg DIR benchmarks another build of the package (e.g. an older commit's worktree) in the same way.
# --peer wllama installs npm @wllama/wllama (3.x) in a temp dir and runs it on the same GGUF and prompt,
# greedy, in the same browser (1 and 2 threads), printing its figures and our ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
build=1
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    --peer) peer=next ;;
    *)
      if [ "${peer:-}" = next ]; then
        [ "$a" = wllama ] || { echo "bench-browser.sh: --peer: only wllama is known" >&2; exit 2; }
        peer=wllama
      else
        args+=("$a")
      fi
      ;;
  esac
done
if [ "${peer:-}" = wllama ]; then
  tmp=$(mktemp -d /tmp/webgpu-llm-peer-XXXXXX)
  npm install --prefix "$tmp" --no-audit --no-fund --silent "@wllama/wllama@3" >&2
  args+=(--peer-dir "$tmp/node_modules/@wllama/wllama")
fi
[ -d node_modules/playwright-core ] || npm install --no-audit --no-fund >/dev/null
if [ "$build" = 1 ] && ! printf '%s\n' "${args[@]}" | grep -qx -- --pkg; then
  bash scripts/build-pkg.sh >&2
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}"
mkdir -p "$XDG_RUNTIME_DIR"
exec node tests/browser/bench.mjs "${args[@]}"
