#!/usr/bin/env bash
# Fuzz the untrusted-input parsers (fuzz/, cargo-fuzz + libFuzzer on nightly), one target after
# another, each for SECONDS_PER_TARGET (default 60), single process. Not a CI step.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
#
# Targets: gguf_header, gguf_stream (needs a GPU adapter; lavapipe will do), manifest,
# gguf_tokenizer. Seeds come from fuzz/seeds/<target> (fuzz/make_seeds.py); the growing corpus is
# fuzz/corpus/<target> and crashes land in fuzz/artifacts/<target> (both git-ignored). Prints the
# executions and findings per target; exits 1 if any target found something.
#
# Builds without a sanitizer (the code is safe Rust) but with debug assertions and overflow checks.
# Environment: FUZZ_SANITIZER (default none; e.g. address), FUZZ_RSS_MB (default 2048, also the
# single-allocation limit), FUZZ_TIMEOUT (seconds one input may take; default 10), FUZZ_ARGS (more
# libFuzzer flags). Reproduce a finding with: cd fuzz && cargo +nightly fuzz run -s none -a TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(gguf_header gguf_stream manifest gguf_tokenizer)
SANITIZER=${FUZZ_SANITIZER:-none}
RSS_MB=${FUZZ_RSS_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT:-10}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi
# The GPU target on a machine without a display GPU uses lavapipe; wgpu wants a runtime dir.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/webgpu-llm-xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

FLAGS=(-s "$SANITIZER" -a)
for t in "${TARGETS[@]}"; do
    cargo +nightly fuzz build "${FLAGS[@]}" "$t"
done

summary=()
found=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log=$(mktemp "/tmp/fuzz-$t.XXXXXX.log")
    before=$(find "artifacts/$t" -type f | wc -l)
    dict=()
    case $t in gguf_*) dict=(-dict=dict/gguf.dict) ;; manifest) dict=(-dict=dict/manifest.dict) ;; esac
    echo "== $t: ${SECONDS_PER_TARGET}s (log $log)"
    set +e
    # -fork=1: a crash, timeout or OOM is recorded in artifacts/ and fuzzing goes on (one job).
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" \
        -timeout="$TIMEOUT" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    # Fork mode prints "#N: cov: ... oom/timeout/crash: a/b/c time: Ts ..." as jobs finish; N counts
    # every execution of every job. Without -fork: "#N DONE ..." or "#N ..." lines.
    last=$( (grep -E '^#[0-9]+' "$log" || true) | tail -1)
    execs=$(echo "$last" | grep -oE '^#[0-9]+' | tr -d '#')
    execs=${execs:-0}
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || true)
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || true)
    after=$(find "artifacts/$t" -type f | wc -l)
    new=$((after - before))
    corpus=$(find "corpus/$t" -type f | wc -l)
    line="$t: $execs executions in ${SECONDS_PER_TARGET}s ($((execs / SECONDS_PER_TARGET))/s), cov ${cov:-?} ft ${ft:-?}, corpus $corpus, $new new finding(s) (exit $rc)"
    summary+=("$line")
    if [ "$new" -gt 0 ]; then
        found=1
        find "artifacts/$t" -type f -newer "$log" | sed 's/^/    /'
        (grep -E 'panicked|ERROR: libFuzzer|SUMMARY|^CRASH|^TIMEOUT|^OOM' "$log" || true) | sort | uniq -c | head -20 | sed 's/^/    /'
    fi
    echo "$line"
done
echo
echo "== summary ($(nproc) cores, $(date -u +%F))"
printf '%s\n' "${summary[@]}"
exit $found
