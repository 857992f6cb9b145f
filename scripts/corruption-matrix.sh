#!/usr/bin/env bash
# The corruption matrix (issue #5, "Corruption, across processes"): every field of the header,
# the channel entry and the slot is corrupted in a fresh segment, and the consumer and the
# producer of each client (Rust examples, the C examples built with ASan+UBSan, Go, Python and
# the `dmxp` CLI) must answer with a typed error or skip and count the bad message: no
# signal, panic, sanitizer report, stray traceback or hang. scripts/corruption_matrix.py has
# the cases and the rules; this script builds the programs and runs it.
#
#   scripts/corruption-matrix.sh [--cases REGEX] [--clients rust,c,go,python,cli] [--verbose]
#
# Needs the Python package installed (scripts/test-python.sh, or DMXP_PYTHON pointing at a
# Python that has it). Exits non-zero if any cell fails.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PY=${DMXP_PYTHON:-$repo/bindings/python/.venv/bin/python}

cargo build --release -q -p dmxp --example producer --example consumer || exit 1
cargo build --release -q -p dmxp-cli || exit 1
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

# The C examples with the sanitizers (the Makefile builds them -O2 without).
asan="$repo/bindings/c/build/asan"
mkdir -p "$asan"
for prog in producer consumer; do
    gcc -std=c11 -Wall -Wextra -Werror -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -g -O1 -fno-omit-frame-pointer \
        -fsanitize=address,undefined -fno-sanitize-recover=all -pthread \
        "bindings/c/examples/$prog.c" -o "$asan/$prog" || exit 1
done
(cd bindings/go && GOPROXY=off GOTOOLCHAIN=local go build -o build/ ./cmd/producer ./cmd/consumer) || exit 1
if ! "$PY" -c 'import dmxp' 2>/dev/null; then
    echo "corruption-matrix: the Python package is not installed at $PY (run scripts/test-python.sh first)" >&2
    exit 1
fi

exec python3 scripts/corruption_matrix.py --repo "$repo" \
    --rust "$target_dir/release/examples" --c "$asan" --go "$repo/bindings/go/build" \
    --python "$PY" --cli "$target_dir/release/dmxp" "$@"
