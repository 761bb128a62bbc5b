#!/usr/bin/env bash
# Build the Chrome MV3 extension (www/extension/) into a loadable unpacked folder and a .zip.
#
#   bash scripts/build-extension.sh [--model-url URL] [--page-access PATTERN]... [--out DIR] [--zip FILE]
#
#   --model-url URL      the default model, baked into config.js (env MODEL_URL). Users can change it in
#                        the panel's Options or pick a local .gguf file. Default:
#                        http://127.0.0.1:8080/SmolLM2-135M-Instruct.Q4_1.gguf, which
#                        `node tests/browser/extension.mjs --serve 8080` serves from models/. A real
#                        deployment points at a hosted model (with CORS headers, as Hugging Face sends).
#   --embed-model-url URL  the default embedding model for "Find by meaning" (env EMBED_MODEL_URL): a
#                        package's manifest.json converted from a sentence-transformers model. Default:
#                        http://127.0.0.1:8080/all-MiniLM-L6-v2/manifest.json, which `node
#                        tests/browser/extension.mjs --serve 8080` serves (converted on the fly).
#   --page-access PAT    a host permission granted at install (env PAGE_ACCESS, space-separated), e.g.
#                        "http://127.0.0.1/*" for automated tests. Without it the extension reads a tab
#                        only after the user clicks its toolbar button there (activeTab) or allows all
#                        sites in Options (an optional permission).
#   --out DIR            unpacked folder (default target/extension)
#   --zip FILE           zip of that folder (default target/webgpu-llm-extension.zip)
#
# The package's files (pkg/index.js, pkg/src/*.js, pkg/wasm/*) are copied in: an extension can only
# load code from its own folder (CSP script-src 'self'), and nothing is fetched from elsewhere.
# Needs pkg/wasm/ (bash scripts/build-pkg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_URL="${MODEL_URL:-http://127.0.0.1:8080/SmolLM2-135M-Instruct.Q4_1.gguf}"
EMBED_MODEL_URL="${EMBED_MODEL_URL:-http://127.0.0.1:8080/all-MiniLM-L6-v2/manifest.json}"
read -r -a ACCESS <<<"${PAGE_ACCESS:-}"
OUT=target/extension
ZIP=target/webgpu-llm-extension.zip
while [ $# -gt 0 ]; do
  case "$1" in
    --model-url) MODEL_URL="$2"; shift 2 ;;
    --embed-model-url) EMBED_MODEL_URL="$2"; shift 2 ;;
    --page-access) ACCESS+=("$2"); shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --zip) ZIP="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build-extension.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

for url in "$MODEL_URL" "$EMBED_MODEL_URL"; do
  case "$url" in
    http://*|https://*) ;;
    *) echo "build-extension.sh: --model-url and --embed-model-url must be http(s) URLs, not '$url'" >&2; exit 2 ;;
  esac
done
if [ ! -f pkg/wasm/webgpu_llm.js ] || [ ! -f pkg/wasm/webgpu_llm_bg.wasm ]; then
  echo "build-extension.sh: pkg/wasm/ is missing: run bash scripts/build-pkg.sh first" >&2
  exit 1
fi

rm -rf "$OUT"
mkdir -p "$OUT/pkg/src" "$OUT/pkg/wasm"
cp www/extension/*.html www/extension/*.css www/extension/*.js "$OUT/"
cp pkg/index.js pkg/LICENSE "$OUT/pkg/"
cp pkg/src/*.js "$OUT/pkg/src/"
cp pkg/wasm/webgpu_llm.js pkg/wasm/webgpu_llm_bg.wasm "$OUT/pkg/wasm/"

# config.js and manifest.json get the build's settings (JSON written by node, so any URL is quoted right).
MODEL_URL="$MODEL_URL" EMBED_MODEL_URL="$EMBED_MODEL_URL" OUT="$OUT" node --input-type=module -e '
  import fs from "node:fs";
  const { MODEL_URL, EMBED_MODEL_URL, OUT } = process.env;
  const access = process.argv.slice(1);
  fs.writeFileSync(`${OUT}/config.js`,
    "// Written by scripts/build-extension.sh: the default model (Options can change it).\n" +
    `export const DEFAULT_MODEL_URL = ${JSON.stringify(MODEL_URL)};\n` +
    `export const DEFAULT_EMBED_MODEL_URL = ${JSON.stringify(EMBED_MODEL_URL)};\n`);
  const manifest = JSON.parse(fs.readFileSync("www/extension/manifest.json", "utf8"));
  manifest.host_permissions = access;
  fs.writeFileSync(`${OUT}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
' "${ACCESS[@]+"${ACCESS[@]}"}"

mkdir -p "$(dirname "$ZIP")"
ZIP_ABS="$(cd "$(dirname "$ZIP")" && pwd)/$(basename "$ZIP")"
rm -f "$ZIP_ABS"
(cd "$OUT" && zip -qr -X "$ZIP_ABS" .)
files=$(find "$OUT" -type f | wc -l)
echo "build-extension.sh: $OUT ($files files, $(du -sk "$OUT" | cut -f1) KiB), $ZIP ($(stat -c %s "$ZIP_ABS") bytes); model $MODEL_URL; embedding model $EMBED_MODEL_URL; page access: ${ACCESS[*]:-activeTab only}"
