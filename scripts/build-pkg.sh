#!/usr/bin/env bash
# Build the npm package's wasm: the crate for wasm32 (release), wasm-bindgen --target web into
# pkg/wasm/, then npm binaryen's wasm-opt (Debian's binaryen 108 breaks the module: ../shared notes).
# Last, pkg/wasm/build-stamp.json: the hash of the sources as they were when the build started and of the
# built files, which the package's prepack check (pkg/scripts/prepack-check.mjs) compares before `npm pack`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/binaryen ] || npm install --no-audit --no-fund >/dev/null
sources_at=$(date +%s%3N)
source_hash=$(node pkg/scripts/prepack-check.mjs --hash)
cargo build --lib --profile wasm-release --target wasm32-unknown-unknown
rm -rf pkg/wasm
wasm-bindgen --target web --out-dir pkg/wasm --out-name webgpu_llm target/wasm32-unknown-unknown/wasm-release/webgpu_llm.wasm
node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  pkg/wasm/webgpu_llm_bg.wasm -o pkg/wasm/webgpu_llm_bg.opt.wasm
mv pkg/wasm/webgpu_llm_bg.opt.wasm pkg/wasm/webgpu_llm_bg.wasm
node pkg/scripts/prepack-check.mjs --stamp --source-hash "$source_hash" --since "$sources_at"
raw=$(stat -c %s pkg/wasm/webgpu_llm_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/webgpu_llm_bg.wasm | wc -c)
echo "build-pkg.sh: pkg/wasm/webgpu_llm_bg.wasm $raw bytes ($gz gzipped)"
