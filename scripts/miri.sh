#!/usr/bin/env bash
# Runs the tests of the core crate `dmxp-nostd` under Miri (nightly), which checks every
# memory access, atomic and thread interleaving it executes for undefined behaviour.
#
#   scripts/miri.sh [extra `cargo miri test` arguments, e.g. a test name filter]
#
# By default it runs the tests that drive the unsafe boundary (region.rs: views of the
# segment, payload copies) and the atomics through every path: the unit tests, the ring
# (sends, receives, batches, loans, in-place receives), validation of hostile bytes, crash
# recovery, threads racing (stress), two mappings of one segment, the fuzz corpus, three
# tests of runs (messages longer than one slot) and four of the blob pool. The golden-file, model and property tests
# repeat those same paths over many formatted segments (minutes each when interpreted); they
# run natively in `cargo test`. MIRI_ALL=1 runs every
# test target and the doc tests too.
#
# Installs the Miri component if it is missing. When it cannot be installed (no network, no
# nightly), it prints a loud "MIRI UNAVAILABLE" note and exits 0, so CI still runs everything
# else. Otherwise it exits non-zero if Miri reports undefined behaviour or any test fails.
#
# Tests that cannot run under Miri (system calls Miri does not support, sizes that take too
# long interpreted) are marked `#[cfg_attr(miri, ignore)]` in the sources; property tests cap
# their case counts under `cfg(miri)`, and PROPTEST_CASES below caps them further.
#
# Environment:
#   MIRI_TOOLCHAIN    toolchain to use (default: nightly)
#   MIRI_ALL          1 = every test target and the doc tests (default: the targets above)
#   MIRI_PARALLEL     1 = run ring_basics beside the other targets, on the second core
#   PROPTEST_CASES    proptest cases per property (default: 8)
#   MIRIFLAGS         extra Miri flags; -Zmiri-disable-isolation is always added (proptest
#                     reads the environment and the clock)

set -euo pipefail

toolchain="${MIRI_TOOLCHAIN:-nightly}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

unavailable() {
    echo "=================================================================================="
    echo "MIRI UNAVAILABLE: $1"
    echo "The Miri run of dmxp-nostd was SKIPPED; nothing was checked for undefined behaviour."
    echo "=================================================================================="
    exit 0
}

if ! command -v rustup >/dev/null 2>&1; then
    unavailable "rustup is not installed"
fi

installed="$(rustup component list --toolchain "$toolchain" --installed 2>/dev/null || true)"
if ! grep -q '^miri' <<<"$installed" || ! grep -q '^rust-src' <<<"$installed"; then
    echo "scripts/miri.sh: installing miri and rust-src for toolchain '$toolchain'"
    if ! rustup component add --toolchain "$toolchain" miri rust-src; then
        unavailable "'rustup component add --toolchain $toolchain miri rust-src' failed"
    fi
fi

# Builds Miri's own sysroot once (quietly); a failure here is an environment problem.
if ! cargo "+$toolchain" miri setup; then
    unavailable "'cargo +$toolchain miri setup' failed"
fi

export MIRIFLAGS="-Zmiri-disable-isolation ${MIRIFLAGS:-}"
export PROPTEST_CASES="${PROPTEST_CASES:-8}"

echo "scripts/miri.sh: MIRIFLAGS='$MIRIFLAGS' PROPTEST_CASES=$PROPTEST_CASES"
# Two groups of about the same length, each in its own target directory (two cargo commands
# cannot share one), run side by side when MIRI_PARALLEL=1: Miri interprets on one core.
# (measured on 2 cores: ring_basics 17 min, recovery 10, validation 18, the rest 2)
group_a=(--test ring_basics --test recovery)
group_b=(--lib)
for test in validation stress position_independence abandoned fuzz_corpus; do
    group_b+=(--test "$test")
done

run_group() { # TARGET_DIR ARGS...
    local dir=$1
    shift
    CARGO_TARGET_DIR="$dir" cargo "+$toolchain" miri test -p dmxp-nostd "$@"
}

# Runs (messages longer than one slot, PROTOCOL.md §12): three tests that take the run paths
# through the unsafe boundary and the atomics (a send and a loan of a run, the in-place parts,
# a corrupt run, a dead producer's run loan repaired); the rest of tests/runs.rs repeats them
# over many laps and threads (about a minute per test interpreted) and runs natively.
runs_tests=(in_place_receive_reads_a_run_part_by_part a_corrupt_run_is_counted_once
    a_run_loan_of_a_producer_judged_dead)
# The blob pool (PROTOCOL.md §13): views of the pool through the unsafe boundary, blocks read
# and written in place, bad references, the reclaim of a dead peer's blocks.
blob_tests=(a_blob_travels_whole_in_place a_stale_or_forged_reference
    a_dead_producers_loan_and_a_dead_consumers_block a_copying_receive_takes_a_blob)
run_runs() { # TARGET_DIR
    CARGO_TARGET_DIR="$1" cargo "+$toolchain" miri test -p dmxp-nostd --test runs -- "${runs_tests[@]}"
    CARGO_TARGET_DIR="$1" cargo "+$toolchain" miri test -p dmxp-nostd --test blob -- "${blob_tests[@]}"
}

# With `set -e` a test failure or a UB report (both make cargo exit non-zero) fails the script.
if [ "${MIRI_ALL:-0}" = 1 ]; then
    cargo "+$toolchain" miri test -p dmxp-nostd "$@"
elif [ "${MIRI_PARALLEL:-0}" = 1 ]; then
    log_a=$(mktemp -t dmxp-miri-a.XXXXXX)
    run_group target/miri-a "${group_a[@]}" "$@" >"$log_a" 2>&1 &
    pid_a=$!
    status_b=0
    { run_group target "${group_b[@]}" "$@" && if [ $# -eq 0 ]; then run_runs target; fi; } ||
        status_b=$?
    status_a=0
    wait "$pid_a" || status_a=$?
    echo "---- scripts/miri.sh: the group run beside it (${group_a[*]}):"
    cat "$log_a"
    rm -f "$log_a"
    if [ "$status_a" -ne 0 ] || [ "$status_b" -ne 0 ]; then
        echo "scripts/miri.sh: FAILED (exit $status_b for ${group_b[*]}, $status_a for ${group_a[*]})"
        exit 1
    fi
else
    cargo "+$toolchain" miri test -p dmxp-nostd "${group_b[@]}" "${group_a[@]}" "$@"
    if [ $# -eq 0 ]; then run_runs target; fi
fi
echo "scripts/miri.sh: Miri found no undefined behaviour; all non-ignored tests passed."
