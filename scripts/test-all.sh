#!/usr/bin/env bash
# Runs every check the project has, installing what it needs first. This is the README's test
# command and what CI (.ci/run) calls. A component that cannot be installed (for example the
# Miri download) is reported loudly and the rest still runs; any failing check fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."

failures=()
step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    local start=$SECONDS
    if "$@"; then
        echo "<== $name: ok ($((SECONDS - start)) s)"
    else
        echo "<== $name: FAILED ($((SECONDS - start)) s)"
        failures+=("$name")
    fi
}

# A step run in the background: its output goes to a log that `finish_background` prints
# when it ends. Only for steps that time nothing (Miri), started after the steps whose
# multi-process tests measure time, so that the two cores serve both halves.
background_pids=()
background_names=()
background_logs=()
background_starts=()
start_background() {
    local name=$1
    shift
    local log
    log=$(mktemp -t dmxp-step.XXXXXX)
    echo
    echo "==> $name (started in the background; its output follows when it ends)"
    "$@" >"$log" 2>&1 &
    background_pids+=("$!")
    background_names+=("$name")
    background_logs+=("$log")
    background_starts+=("$SECONDS")
}
finish_background() {
    local i
    for i in "${!background_pids[@]}"; do
        local name=${background_names[$i]}
        echo
        echo "==> $name (output of the background run)"
        if wait "${background_pids[$i]}"; then
            cat "${background_logs[$i]}"
            echo "<== $name: ok ($((SECONDS - background_starts[$i])) s, beside the steps above)"
        else
            cat "${background_logs[$i]}"
            echo "<== $name: FAILED ($((SECONDS - background_starts[$i])) s, beside the steps above)"
            failures+=("$name")
        fi
        rm -f "${background_logs[$i]}"
    done
}

# libFuzzer (fuzz replay tests, cargo-fuzz) is C++; gcc alone is not enough.
if ! command -v g++ >/dev/null; then
    echo "installing g++ (needed to build libFuzzer)"
    (apt-get update -qq && apt-get install -y -qq g++) || echo "WARNING: could not install g++"
fi

step "rustfmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-features --all-targets -- -D warnings
step "rust-version vs the locked dependencies" scripts/check-msrv.py
step "publish dry run (every crate packages; all but dmxp-bridge build from their package)" scripts/publish-check.sh
step "docs (cargo doc, warnings denied)" env RUSTDOCFLAGS="-D warnings" \
    cargo doc --workspace --all-features --no-deps
step "dmxp without any backend feature" cargo check -p dmxp --no-default-features
step "tests (cargo test --workspace --all-features)" cargo test --workspace --all-features
step "fuzz corpus replay (stable)" cargo test --manifest-path fuzz/Cargo.toml
step "no_std build (x86_64-unknown-none)" bash -c \
    'rustup target add x86_64-unknown-none >/dev/null && cargo build -p dmxp-nostd --target x86_64-unknown-none'
[ -x scripts/test-c.sh ] && step "C client" scripts/test-c.sh
[ -x scripts/test-go.sh ] && step "Go client" scripts/test-go.sh
[ -x scripts/test-python.sh ] && step "Python client" scripts/test-python.sh
[ -x scripts/interop.sh ] && step "interop matrix (16 cells + mixed)" scripts/interop.sh
[ -x scripts/bridge.sh ] && step "bridge: Python producer -> two Zenoh bridges -> Go consumer" scripts/bridge.sh
[ -x scripts/corruption-matrix.sh ] && step "corruption matrix (every client x corrupted fields)" \
    scripts/corruption-matrix.sh
[ -x scripts/trust-matrix.sh ] && step "trust matrix (every client x a segment squatted by another uid)" \
    scripts/trust-matrix.sh
# Miri is the longest step and single-threaded, as are the loom models and each fuzz run:
# it runs on one core while they take the other.
[ -x scripts/miri.sh ] && start_background "miri" env MIRI_PARALLEL=1 scripts/miri.sh
[ -x scripts/loom.sh ] && step "loom models" scripts/loom.sh
[ -x scripts/fuzz.sh ] && step "fuzz (short runs)" scripts/fuzz.sh "${DMXP_FUZZ_SECONDS:-30}"
finish_background

echo
if [ ${#failures[@]} -ne 0 ]; then
    echo "FAILED: ${failures[*]}"
    exit 1
fi
echo "all checks passed"
