#!/usr/bin/env bash
# One-shot benchmark on a lent GPU machine (bare Linux, NVIDIA + Vulkan driver, no network, nothing installed):
# our kernels (bench-kernels --json), our engine (webgpu-llm bench --json) and llama.cpp's llama-bench (Vulkan)
# on the same random Llama-3.2-3B-shaped Q4_K_M GGUF, then one summary line: our decode/prefill tok/s over
# llama.cpp's. Everything it runs comes prebuilt in the carried folder (scripts/build-device-carry.sh).
#
#   bash scripts/device-bench.sh [--carried DIR] [--out DIR] [--quick] [--model GGUF] [--budget S] [--sizes P,G]
#
#   --carried  the folder build-device-carry.sh made (default .device-carry)
#   --out      raw outputs and summary.json (default $OUT if set, else /tmp/device-bench)
#   --quick    tiny sizes on the small default model (a smoke test on lavapipe; not a measurement)
#   --model    use this GGUF instead of generating the 3B one
#   --budget   seconds for the whole run (default 450: the device allows 8 minutes)
#   --sizes P,G  prompt and generated tokens instead of 512,128 (16,8 with --quick)
# A step that fails or times out is reported and the later steps still run; the exit code is 0 when the
# summary has both ratios, 1 otherwise.
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s)

CARRIED=.device-carry
OUTDIR=${OUT:-/tmp/device-bench}
QUICK=0
MODEL=
BUDGET=450
SIZES=
while [ $# -gt 0 ]; do
  case "$1" in
    --carried) CARRIED=$2; shift 2 ;;
    --out) OUTDIR=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --model) MODEL=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    *) echo "usage: $0 [--carried DIR] [--out DIR] [--quick] [--model GGUF] [--budget S] [--sizes P,G]" >&2; exit 2 ;;
  esac
done
CARRIED=$(cd "$CARRIED" 2>/dev/null && pwd) || { echo "device-bench: no carried folder (run scripts/build-device-carry.sh)" >&2; exit 2; }
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/device-bench.log
: > "$LOG"
say() { echo "device-bench: $*" | tee -a "$LOG" >&2; }
elapsed() { echo $(( $(date +%s) - START )); }

# ---- tools: the carried busybox stands in for anything this bare machine lacks (xz, timeout, awk, ...) -----
BIN=/tmp/device-bench-bin   # unpacked here: the carried folder may be read-only, and /tmp is roomy
mkdir -p "$BIN/tools" "$BIN/lib"
BB=$CARRIED/bin/busybox
for t in timeout awk sed grep xz head tail tr cut sort wc cat date mkdir ln cp rm ls basename dirname; do
  if ! command -v "$t" >/dev/null 2>&1 && [ -x "$BB" ]; then ln -sf "$BB" "$BIN/tools/$t"; fi
done
export PATH="$PATH:$BIN/tools"   # after the system's: its own tools win

# unpack the carried binaries (stored .xz when they would not fit in 64 MiB otherwise)
unpack() {  # unpack SRC DEST
  case "$1" in
    *.xz) xz -dc "$1" > "$2" 2>/dev/null || "$BB" xz -dc "$1" > "$2" ;;
    *) cp "$1" "$2" ;;
  esac
}
for f in "$CARRIED"/bin/*; do
  name=$(basename "$f" .xz)
  [ "$name" = busybox ] && continue
  [ -x "$BIN/$name" ] && [ "$BIN/$name" -nt "$f" ] && continue
  unpack "$f" "$BIN/$name" && chmod +x "$BIN/$name" || say "could not unpack $f"
done
mkdir -p "$BIN/tokenizer"
for f in "$CARRIED"/tokenizer/*; do
  [ -e "$f" ] && unpack "$f" "$BIN/tokenizer/$(basename "$f" .xz)"
done
say "unpacked carried files in $(elapsed) s"

# ---- Vulkan: loader and driver -------------------------------------------------------------------------
# Carried libraries are used only where the system lacks them, so a newer system copy always wins.
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1" || ls /lib/x86_64-linux-gnu/"$1"* /usr/lib/x86_64-linux-gnu/"$1"* /usr/lib64/"$1"* >/dev/null 2>&1; }
for f in "$CARRIED"/lib/*; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .xz)
  if ! have_lib "$name"; then
    unpack "$f" "$BIN/lib/$name"
    say "system lacks $name: using the carried one"
  fi
done
# NVIDIA's container runtime puts the driver under /usr/local/nvidia, which the loader may not search
ICD_FOUND=
for d in /etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
  ls "$d"/nvidia*.json >/dev/null 2>&1 && ICD_FOUND="$d"
done
if [ -z "$ICD_FOUND" ] && [ -z "${VK_DRIVER_FILES:-}" ] && [ -z "${VK_ICD_FILENAMES:-}" ]; then
  for j in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json; do
    if [ -f "$j" ]; then
      export VK_DRIVER_FILES=$j VK_ICD_FILENAMES=$j   # the second for loaders older than 1.3.234
      say "no NVIDIA ICD in the standard places: VK_DRIVER_FILES=$j"
      break
    fi
  done
fi
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$d" ] && ! have_lib libGLX_nvidia && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH="$BIN/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/device-bench-xdg}; mkdir -p "$XDG_RUNTIME_DIR"
{
  echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown) (carried binaries need ≥ $(cat "$CARRIED/GLIBC_NEEDED" 2>/dev/null || echo '?'))"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH VK_DRIVER_FILES=${VK_DRIVER_FILES:-} ICD dir=${ICD_FOUND:-none}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} 2>&1 | tee -a "$LOG" >&2

# ---- steps --------------------------------------------------------------------------------------------
declare -A STATUS
# step NAME SECONDS STDOUT_FILE CMD...: run with a timeout capped by what is left of the budget, keeping
# its stdout and stderr in $OUTDIR; never stops the script.
step() {
  local name=$1 secs=$2 out=$3; shift 3
  local left=$(( BUDGET - $(elapsed) - 5 ))
  [ "$secs" -gt "$left" ] && secs=$left
  if [ "$secs" -lt 5 ]; then STATUS[$name]="skipped (out of time)"; say "$name: skipped, out of time"; return 1; fi
  say "$name: up to ${secs} s: $*"
  local t0=$(date +%s) rc
  timeout -k 5 "$secs" "$@" > "$out" 2> "$OUTDIR/$name.stderr"
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) STATUS[$name]="ok ${dt}s" ;;
    124|137) STATUS[$name]="timeout ${dt}s" ;;
    *) STATUS[$name]="failed rc=$rc ${dt}s" ;;
  esac
  say "$name: ${STATUS[$name]}"
  [ $rc = 0 ] || tail -5 "$OUTDIR/$name.stderr" | sed 's/^/    /' >&2
  return $rc
}

# device: bench-kernels' first line names the adapter wgpu picked (one small kernel, so it is quick)
step probe 30 "$OUTDIR/probe.json" "$BIN/bench-kernels" --formats q4k --m 1 --shapes k_proj/v_proj --quick --json
DEVICE=$(grep -m1 -i '^device:' "$OUTDIR/probe.stderr" 2>/dev/null | sed 's/^[Dd]evice: *//')
say "device: ${DEVICE:-unknown}"

# sizes: the 3B model at the issue's sizes, or tiny ones on the small model for a smoke test
if [ "$QUICK" = 1 ]; then
  P=16; G=8; REPS=1
  MODEL=${MODEL:-$REPO/models/SmolLM2-135M-Instruct.Q4_1.gguf}
  KFORMATS=q4k; KM=1; KSHAPES=k_proj/v_proj; KQUICK=--quick
else
  P=512; G=128; REPS=3
  KFORMATS=q4,q4k,q8,q6k,f16; KM=1,128; KSHAPES=q_proj/o_proj,k_proj/v_proj,gate/up_proj,down_proj,lm_head; KQUICK=
fi
[ -n "$SIZES" ] && { P=${SIZES%,*}; G=${SIZES#*,}; }
GEN_S=
if [ -z "$MODEL" ]; then
  # ~2 GB, too big to carry: written here by the carried generator (same layout as scripts/make-3b-gguf.py)
  MODEL=/tmp/llama-3.2-3b-shape.Q4_K_M.gguf
  t0=$(date +%s)
  step make_gguf 120 "$OUTDIR/make_gguf.txt" "$BIN/make_3b_gguf" --out "$MODEL" --tokenizer "$BIN/tokenizer" \
    && GEN_S=$(( $(date +%s) - t0 ))
  cat "$OUTDIR/make_gguf.txt" >&2
fi

# our engine: the headline numbers, so before the long kernel sweep
step webgpu_llm 120 "$OUTDIR/webgpu-llm-bench.json" \
  "$BIN/webgpu-llm" bench --model "$MODEL" --prompt-tokens $P --gen-tokens $G --json

# llama.cpp, Vulkan backend, all layers on the GPU; jsonl: one flat object per test (pp then tg)
step llama_bench 150 "$OUTDIR/llama-bench.jsonl" \
  "$BIN/llama-bench" -m "$MODEL" -p $P -n $G -ngl 99 -r $REPS -o jsonl

# kernel sweep last, with whatever time is left (its rows stream out, so a timeout keeps what it measured)
step bench_kernels 200 "$OUTDIR/bench-kernels.jsonl" \
  "$BIN/bench-kernels" --formats $KFORMATS --m $KM --shapes $KSHAPES $KQUICK --json

# ---- summary ------------------------------------------------------------------------------------------
num() { sed -n "s/.*\"$1\": *\([-0-9.eE+]*\).*/\1/p" "$2" 2>/dev/null | head -1; }
OURS=$OUTDIR/webgpu-llm-bench.json
OUR_DEC=$(num decode_tok_s "$OURS"); OUR_PRE=$(num prefill_tok_s "$OURS"); ROOF=$(num roofline "$OURS")
COPY=$(num copy_gb_s "$OURS")
LL=$OUTDIR/llama-bench.jsonl
# llama-bench: the pp row has n_gen 0, the tg row n_prompt 0
LL_PRE=$(grep '"n_gen": *0[,}]' "$LL" 2>/dev/null > "$OUTDIR/.pp"; num avg_ts "$OUTDIR/.pp")
LL_DEC=$(grep '"n_prompt": *0[,}]' "$LL" 2>/dev/null > "$OUTDIR/.tg"; num avg_ts "$OUTDIR/.tg")
LL_GPU=$(sed -n 's/.*"gpu_info": *"\([^"]*\)".*/\1/p' "$LL" 2>/dev/null | head -1)
rm -f "$OUTDIR/.pp" "$OUTDIR/.tg"
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b }'; }
# ggml-vulkan skips CPU devices (lavapipe) and then runs on the CPU: no comparison without its GPU
if [ -s "$LL" ] && [ -z "$LL_GPU" ]; then
  STATUS[llama_bench]="ran without a Vulkan GPU ($(head -1 "$OUTDIR/llama_bench.stderr" 2>/dev/null)): not compared"
  say "llama_bench: ${STATUS[llama_bench]}"
  LL_PRE=; LL_DEC=
fi
DEC_R=$(ratio "$OUR_DEC" "$LL_DEC"); PRE_R=$(ratio "$OUR_PRE" "$LL_PRE")
jnum() { [ -n "$1" ] && echo "$1" || echo null; }
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
STEPS=
for k in probe make_gguf webgpu_llm llama_bench bench_kernels; do
  [ -n "${STATUS[$k]:-}" ] && STEPS="$STEPS${STEPS:+,}\"$k\":$(jstr "${STATUS[$k]}")"
done
SUMMARY="{\"device\":$(jstr "${DEVICE:-}"),\"llama_gpu\":$(jstr "${LL_GPU:-}"),\"model\":$(jstr "$MODEL"),\
\"prompt_tokens\":$P,\"gen_tokens\":$G,\"quick\":$([ $QUICK = 1 ] && echo true || echo false),\
\"decode_ratio\":$(jnum "$DEC_R"),\"prefill_ratio\":$(jnum "$PRE_R"),\
\"ours_decode_tok_s\":$(jnum "$OUR_DEC"),\"ours_prefill_tok_s\":$(jnum "$OUR_PRE"),\
\"llama_decode_tok_s\":$(jnum "$LL_DEC"),\"llama_prefill_tok_s\":$(jnum "$LL_PRE"),\
\"roofline\":$(jnum "$ROOF"),\"copy_gb_s\":$(jnum "$COPY"),\"gguf_gen_s\":$(jnum "$GEN_S"),\
\"total_s\":$(elapsed),\"steps\":{$STEPS}}"
echo "$SUMMARY" > "$OUTDIR/summary.json"
say "raw outputs in $OUTDIR"
echo "$SUMMARY"
[ -n "$DEC_R" ] && [ -n "$PRE_R" ]
