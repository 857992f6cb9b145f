#!/usr/bin/env bash
# Crash churn soak, not run by CI (it takes minutes): producers and consumers in Rust (the dmxp
# CLI), Python (the dmxp package), C (bindings/c/examples/churn_*.c) and Go
# (bindings/go/cmd/churn_*) are killed with SIGKILL and restarted every 50-500 ms on one
# channel; then the channel must still flow (also from each language's producer to another
# language's consumer), the peer table stay bounded, nothing arrive twice, and what is missing
# be explained by the kills. scripts/soak_churn.py has the details.
#
#   scripts/soak-churn.sh [--seconds 180] [--segment /dmxp_soak]
#
# Needs cargo and the Python package (scripts/test-python.sh builds it into
# bindings/python/.venv; DMXP_PYTHON names another interpreter). Builds the C programs with
# bindings/c/Makefile (`make churn`, into bindings/c/build/, $CC or gcc) and the Go ones with
# `go build` into a temporary directory; a language whose toolchain is missing is left out,
# with a warning, and the summary's language list says which ran.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${DMXP_PYTHON:-$PWD/bindings/python/.venv/bin/python}
cargo build --release -q -p dmxp-cli
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

extra=()
if command -v make >/dev/null && command -v "${CC:-gcc}" >/dev/null; then
    make -s -C bindings/c churn
    extra+=(--c-bin "$PWD/bindings/c/build")
else
    echo "soak-churn: WARNING: make or ${CC:-gcc} not found: C producers and consumers are NOT in this soak" >&2
fi
go_bin=""
trap '[ -z "$go_bin" ] || rm -rf "$go_bin"' EXIT
if command -v go >/dev/null; then
    go_bin=$(mktemp -d /tmp/dmxp-soak-go.XXXXXX)
    (cd bindings/go && go build -o "$go_bin/" ./cmd/churn_producer ./cmd/churn_consumer)
    extra+=(--go-bin "$go_bin")
else
    echo "soak-churn: WARNING: go not found: Go producers and consumers are NOT in this soak" >&2
fi

"$PY" scripts/soak_churn.py --dmxp "$target_dir/release/dmxp" --python "$PY" ${extra[@]+"${extra[@]}"} "$@"
