#!/usr/bin/env bash
# Builds and collects here everything scripts/device-bench.sh needs on the lent GPU machine, which has no
# network, no compiler and maybe no Vulkan loader, into one git-ignored folder to carry (≤ 64 MiB):
#
#   .device-carry/bin/      webgpu-llm, bench-kernels, make_3b_gguf (writes the 3B GGUF there), llama-bench
#                           (llama.cpp, Vulkan backend, static but for libc and libvulkan), busybox (xz, timeout,
#                           awk for a machine without them); big ones xz-compressed
#   .device-carry/lib/      libvulkan.so.1 and the non-glibc libraries the binaries link (used there only if
#                           the system lacks them)
#   .device-carry/tokenizer the Llama 3 tokenizer files the GGUF embeds
#
#   bash scripts/build-device-carry.sh [--out DIR] [--no-build] [--llama-dir DIR]
#
#   --no-build   do not run cargo (use target/release as it is)
#   --llama-dir  llama.cpp source + build cache (default target/llama.cpp; kept between runs: the Vulkan
#                shaders take most of the 20-40 min a 2-core build needs)
# Needs root for apt-get (glslc, libvulkan-dev, spirv-headers, cmake, busybox-static) and PyPI for the
# llama.cpp source (llama-cpp-python's sdist vendors it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUTDIR=.device-carry
BUILD=1
LLAMA=${LLAMA_DIR:-$REPO/target/llama.cpp}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTDIR=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --llama-dir) LLAMA=$2; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--no-build] [--llama-dir DIR]" >&2; exit 2 ;;
  esac
done
LIMIT=$((64 * 1024 * 1024))
log() { echo "build-device-carry: $*" >&2; }

# ---- tools --------------------------------------------------------------------------------------------
need_apt=
for p in glslc libvulkan-dev spirv-headers cmake busybox-static xz-utils g++; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt="$need_apt $p"
done
if [ -n "$need_apt" ]; then
  log "apt-get install$need_apt"
  apt-get update -qq && apt-get install -y -qq $need_apt >/dev/null
fi

# ---- our binaries ---------------------------------------------------------------------------------------
if [ $BUILD = 1 ]; then
  cargo build --release --bin webgpu-llm --bin bench-kernels --example make_3b_gguf
fi
for f in target/release/webgpu-llm target/release/bench-kernels target/release/examples/make_3b_gguf; do
  [ -x "$f" ] || { log "missing $f (run without --no-build)"; exit 1; }
done
[ -f models/tokenizers/llama3/tokenizer.json ] || bash scripts/fetch-tokenizers.sh

# ---- llama.cpp's llama-bench, Vulkan backend ---------------------------------------------------------
# Debian 12's Vulkan headers (1.3.239) are too old for current ggml-vulkan (vk::LayerSettingEXT), and its
# glslc (shaderc 2023.2) lacks cooperative matrices and integer dot products, so llama.cpp on an NVIDIA GPU
# would lose its coopmat/coopmat2 matmuls and be measured slower than it is. Debian 13's headers and glslc
# (shaderc 2025.2) are taken from its .debs, unpacked, with glslc run by its own glibc: nothing installed.
LLAMA_BENCH=${LLAMA_BENCH:-$LLAMA/build/bin/llama-bench}   # env LLAMA_BENCH: reuse a binary built elsewhere
if [ ! -x "$LLAMA_BENCH" ]; then
  mkdir -p "$LLAMA"
  TRIXIE=$LLAMA/trixie
  if [ ! -x "$TRIXIE/glslc" ]; then
    log "fetching Debian 13's libvulkan-dev and glslc"
    mkdir -p "$TRIXIE/apt/lists/partial" "$TRIXIE/apt/cache/archives/partial" "$TRIXIE/debs" "$TRIXIE/root"
    echo "deb http://deb.debian.org/debian trixie main" > "$TRIXIE/apt/sources.list"
    A=(-o Dir::Etc::SourceList="$TRIXIE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$TRIXIE/apt/lists" -o Dir::Cache="$TRIXIE/apt/cache" -o Dir::State::status=/dev/null)
    apt-get "${A[@]}" update -qq
    (cd "$TRIXIE/debs" && apt-get "${A[@]}" download libvulkan-dev glslc libshaderc1 libc6 libstdc++6 libgcc-s1)
    for d in "$TRIXIE"/debs/*.deb; do dpkg-deb -x "$d" "$TRIXIE/root"; done
    R=$TRIXIE/root
    cat > "$TRIXIE/glslc" <<EOF
#!/bin/sh
exec $R/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $R/usr/lib/x86_64-linux-gnu $R/usr/bin/glslc "\$@"
EOF
    chmod +x "$TRIXIE/glslc"
  fi
  ver=$("$TRIXIE/glslc" --version)   # not piped to head: with pipefail, glslc's SIGPIPE would stop the script
  echo "${ver%%$'\n'*}" >&2
  SRC=$(ls -d "$LLAMA"/llama_cpp_python-*/vendor/llama.cpp 2>/dev/null | tail -1 || true)
  if [ -z "$SRC" ]; then
    log "downloading llama-cpp-python's sdist (vendors llama.cpp)"
    pip download --no-deps --no-binary :all: llama-cpp-python -d "$LLAMA"
    tar xzf "$LLAMA"/llama_cpp_python-*.tar.gz -C "$LLAMA"
    SRC=$(ls -d "$LLAMA"/llama_cpp_python-*/vendor/llama.cpp | tail -1)
  fi
  # static ggml/llama and libstdc++: the binary needs only glibc and libvulkan.so.1; no OpenMP (libgomp)
  cmake -S "$SRC" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_VULKAN=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
    -DGGML_CCACHE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DVulkan_INCLUDE_DIR="$TRIXIE/root/usr/include" -DVulkan_GLSLC_EXECUTABLE="$TRIXIE/glslc" \
    -DCMAKE_PREFIX_PATH="$TRIXIE/root/usr" \
    "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc"
  log "building llama-bench (20-40 min on 2 cores)"
  time cmake --build "$LLAMA/build" --target llama-bench -j"$(nproc)"
fi

# ---- collect -----------------------------------------------------------------------------------------
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR/bin" "$OUTDIR/lib" "$OUTDIR/tokenizer"
for f in target/release/webgpu-llm target/release/bench-kernels target/release/examples/make_3b_gguf; do
  strip -o "$OUTDIR/bin/$(basename "$f")" "$f"
done
strip -o "$OUTDIR/bin/llama-bench" "$LLAMA_BENCH"
cp /bin/busybox "$OUTDIR/bin/busybox"   # busybox-static: runs anywhere, unpacks the rest
cp models/tokenizers/llama3/tokenizer.json models/tokenizers/llama3/tokenizer_config.json "$OUTDIR/tokenizer/"

# libraries: the Vulkan loader (wgpu dlopens it, llama-bench links it) and whatever non-glibc library the
# binaries link (libgcc_s for the Rust ones); glibc itself must be the device's own
libs=$(for f in "$OUTDIR"/bin/*; do ldd "$f" 2>/dev/null || true; done | awk '/=>/ {print $3}' | sort -u)
for l in $libs $(ldconfig -p | awk '/libvulkan.so.1 .*x86-64/ {print $NF; exit}'); do
  case "$(basename "$l")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libvulkan_*) ;;
    *) cp -L "$l" "$OUTDIR/lib/$(basename "$l")" ;;
  esac
done
# the newest glibc symbol version any carried binary needs (the device must have at least that)
for f in "$OUTDIR"/bin/* "$OUTDIR"/lib/*; do objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' || true; done \
  | sort -uV | tail -1 | sed 's/GLIBC_//' > "$OUTDIR/GLIBC_NEEDED"

# compress what is big (SPIR-V and code compress 3-10x); busybox stays plain to undo it there
for f in "$OUTDIR"/bin/* "$OUTDIR"/tokenizer/*; do
  case "$f" in */busybox) continue ;; esac
  if [ "$(stat -c %s "$f")" -gt 1048576 ]; then xz -T0 -6 "$f"; fi
done
{
  echo "webgpu-llm $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"
  echo "llama-bench from $LLAMA_BENCH: $("$LLAMA_BENCH" --version 2>&1 | head -1)"
  echo "built on $(. /etc/os-release; echo "$PRETTY_NAME"), glibc $(getconf GNU_LIBC_VERSION)"
} > "$OUTDIR/MANIFEST"

# keep it out of git without touching .gitignore
case "$OUTDIR" in
  /*) ;;
  *) EXCL=$(git rev-parse --git-path info/exclude)
     mkdir -p "$(dirname "$EXCL")"
     grep -qxF "/${OUTDIR#./}/" "$EXCL" 2>/dev/null || echo "/${OUTDIR#./}/" >> "$EXCL" ;;
esac

size=$(du -sb "$OUTDIR" | cut -f1)
ls -la "$OUTDIR"/* >&2
log "$OUTDIR: $size bytes ($((size / 1048576)) MiB of 64), needs glibc ≥ $(cat "$OUTDIR/GLIBC_NEEDED")"
[ "$size" -le "$LIMIT" ] || { log "over 64 MiB: it cannot be carried"; exit 1; }
