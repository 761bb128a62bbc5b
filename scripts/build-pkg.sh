#!/usr/bin/env bash
# Build the npm package's wasm: the crate for wasm32 (release), wasm-bindgen --target web into
# pkg/wasm/, then npm binaryen's wasm-opt (Debian's binaryen 108 breaks the module: ../shared notes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/binaryen ] || npm install --no-audit --no-fund >/dev/null
cargo build --lib --profile wasm-release --target wasm32-unknown-unknown
rm -rf pkg/wasm
wasm-bindgen --target web --out-dir pkg/wasm --out-name webgpu_llm target/wasm32-unknown-unknown/wasm-release/webgpu_llm.wasm
node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  pkg/wasm/webgpu_llm_bg.wasm -o pkg/wasm/webgpu_llm_bg.opt.wasm
mv pkg/wasm/webgpu_llm_bg.opt.wasm pkg/wasm/webgpu_llm_bg.wasm
raw=$(stat -c %s pkg/wasm/webgpu_llm_bg.wasm)
gz=$(gzip -9 -c pkg/wasm/webgpu_llm_bg.wasm | wc -c)
echo "build-pkg.sh: pkg/wasm/webgpu_llm_bg.wasm $raw bytes ($gz gzipped)"
