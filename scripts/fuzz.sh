#!/usr/bin/env bash
# Runs each fuzz target for a bounded time and fails if any of them finds a crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGETs default to every target in fuzz/fuzz_targets.
# Installs cargo-fuzz if it is missing. Fuzzes on nightly (with AddressSanitizer); if nightly
# is missing or cannot build the targets, falls back to stable with `-s none` (no sanitizer)
# and says so loudly. FUZZ_STABLE=1 skips nightly and goes straight to the stable fallback.
#
# Each target starts from a temporary copy of its committed seeds (fuzz/corpus/<target>/), so
# a run never adds files to the tree. Set FUZZ_KEEP_CORPUS=1 to keep the grown corpora (their
# paths are printed). A crashing input is written to fuzz/artifacts/<target>/ (git-ignored);
# once fixed, copy it to fuzz/regressions/<target>/ so that the stable replay tests
# (`cargo test --manifest-path fuzz/Cargo.toml`) keep checking it.
#
# The harnesses are built with debug assertions, so an arithmetic overflow on hostile bytes
# counts as a crash.
set -euo pipefail

seconds="${1:-60}"
if [ "$#" -gt 0 ]; then shift; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi

banner() {
    echo
    echo "=================================================================================="
    echo "== $*"
    echo "=================================================================================="
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    banner "cargo-fuzz is not installed: installing it (cargo install cargo-fuzz)"
    cargo install --locked cargo-fuzz
fi
echo "using $(cargo fuzz --version)"

# Pick the toolchain: nightly with the default sanitizer, else stable without one.
toolchain=()
sanitizer=()
if [ "${FUZZ_STABLE:-0}" != "1" ] \
    && cargo +nightly --version >/dev/null 2>&1 \
    && cargo +nightly fuzz build --debug-assertions "${targets[@]:0:1}" >/dev/null 2>&1; then
    toolchain=(+nightly)
    echo "fuzzing on $(cargo +nightly --version) with AddressSanitizer"
else
    banner "NIGHTLY FUZZING UNAVAILABLE: falling back to stable with -s none (NO SANITIZER)"
    sanitizer=(-s none)
    if cargo +stable --version >/dev/null 2>&1; then
        toolchain=(+stable)
    fi
    echo "fuzzing on $(cargo "${toolchain[@]}" --version) without a sanitizer"
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/dmxp-fuzz.XXXXXX")"
if [ "${FUZZ_KEEP_CORPUS:-0}" = "1" ]; then
    echo "grown corpora are kept under $workdir"
else
    trap 'rm -rf "$workdir"' EXIT
fi

failed=()
summary=()
for target in "${targets[@]}"; do
    seeds="fuzz/corpus/$target"
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
        echo "no seed corpus in $seeds" >&2
        failed+=("$target (no seeds)")
        continue
    fi
    corpus="$workdir/$target"
    cp -R "$seeds" "$corpus"
    # Segments are ~100 KB, so header_parse inputs must be allowed to be that long (and a bit
    # longer); the structure-aware targets keep libFuzzer's choice.
    extra=()
    if [ "$target" = "header_parse" ]; then
        extra=(-max_len=131072)
    fi
    banner "fuzzing $target for ${seconds}s"
    log="$workdir/$target.log"
    set +e
    cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" --debug-assertions "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
        "${extra[@]}" 2>&1 | tee "$log" | grep -E "INFO: seed corpus|INITED|NEW_FUNC|DONE|Done|ERROR|SUMMARY|panicked|Test unit written|deadly signal|timeout"
    status="${PIPESTATUS[0]}"
    set -e
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -1)"
    rate="$(sed -n 's/.*DONE .* exec\/s: \([0-9]*\).*/\1/p' "$log" | tail -1)"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status); see fuzz/artifacts/$target/")
        tail -n 60 "$log"
    else
        summary+=("$target: ok, ${runs:-? runs}, ${rate:-?} exec/s, corpus $(ls "$corpus" | wc -l) files")
    fi
done

banner "fuzz summary (${seconds}s per target, ${toolchain[*]:-default toolchain} ${sanitizer[*]:-with sanitizer})"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
