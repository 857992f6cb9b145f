#!/usr/bin/env bash
# The interop matrix: for every ordered pair of producer and consumer language among Rust, C,
# Python and Go, a producer process sends N messages (default 100,000) through one channel and
# a consumer process receives them, checking each checksum and that every message arrives
# exactly once. Then the same 16 pairs with messages longer than one slot (up to 256 KiB), the
# same 16 pairs with zero-copy blobs (up to 4 MiB, PROTOCOL.md §13), and one mixed run on one
# channel: Go and C producers, Python and Rust consumers, exactly once overall.
#
#   scripts/interop.sh            (after scripts/test-c.sh, test-go.sh and test-python.sh built the clients)
#   INTEROP_MESSAGES=10000 scripts/interop.sh
#
# Exits non-zero if any cell fails.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

N=${INTEROP_MESSAGES:-100000}
PY=${DMXP_PYTHON:-$repo/bindings/python/.venv/bin/python}

cargo build --release -q -p dmxp --example producer --example consumer || exit 1
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
make -s -C bindings/c examples || exit 1
(cd bindings/go && go build -o build/ ./cmd/producer ./cmd/consumer) || exit 1
if ! "$PY" -c 'import dmxp' 2>/dev/null; then
    echo "interop: the Python package is not installed at $PY (run scripts/test-python.sh first)" >&2
    exit 1
fi

cmd() { # cmd LANGUAGE ROLE
    case "$1" in
    rust) echo "$target_dir/release/examples/$2" ;;
    c) echo "$repo/bindings/c/build/$2" ;;
    go) echo "$repo/bindings/go/build/$2" ;;
    python) echo "$PY $repo/bindings/python/examples/$2.py" ;;
    esac
}

work=$(mktemp -d)
segments=()
cleanup() {
    for s in "${segments[@]}"; do rm -f "/dev/shm$s"; done
    rm -rf "$work"
}
trap cleanup EXIT

languages=(rust c python go)
failures=()
# matrix NAME COUNT [EXTRA_PRODUCER_ARGS...]: every producer language x every consumer
# language, COUNT messages through channel 1 of a fresh segment per cell. A cell that fails
# prints both logs and is named NAME:producer->consumer in the failures.
matrix() {
    local name=$1 count=$2
    shift 2
    local consumer_args=()
    [ "$name" = large ] && consumer_args=(--large)
    [ "$name" = blob ] && consumer_args=(--blob)
    printf '%-8s %-8s %-6s %s\n' producer consumer result "consumer's summary"
    for producer in "${languages[@]}"; do
        for consumer in "${languages[@]}"; do
            local segment="/dmxp_interop_$$_${name}_${producer}_${consumer}"
            segments+=("$segment")
            local log="$work/$name-$producer-$consumer"
            $(cmd "$consumer" consumer) 1 "$count" --segment "$segment" --wait 60 \
                "${consumer_args[@]}" >"$log.consumer" 2>&1 &
            local consumer_pid=$!
            $(cmd "$producer" producer) 1 "$count" 1024 --segment "$segment" "$@" \
                >"$log.producer" 2>&1
            local producer_status=$?
            wait "$consumer_pid"
            local consumer_status=$?
            rm -f "/dev/shm$segment"
            local summary
            summary=$(tail -n 1 "$log.consumer")
            if [ "$producer_status" -eq 0 ] && [ "$consumer_status" -eq 0 ]; then
                printf '%-8s %-8s %-6s %s\n' "$producer" "$consumer" ok "$summary"
            else
                printf '%-8s %-8s %-6s %s\n' "$producer" "$consumer" FAILED "$summary"
                sed 's/^/    /' "$log.producer" "$log.consumer"
                failures+=("$name:$producer->$consumer")
            fi
        done
    done
}

matrix small "$N"

# The large-message column: every producer language x every consumer language on a channel
# made for messages of up to LIMIT bytes, with messages of 24 B, 960 B (one slot), 961 B (the
# shortest run), 64 KiB and LIMIT in turn (`--large`, pattern `large_len`; PROTOCOL.md §12),
# each checked for its length and checksum, exactly once.
NL=${INTEROP_LARGE_MESSAGES:-200}
LIMIT=${INTEROP_LARGE_LIMIT:-262144}
printf '\nlarge messages (%s each, up to %s bytes):\n' "$NL" "$LIMIT"
matrix large "$NL" --large --max-message-size "$LIMIT"

# The blob column: every producer language x every consumer language on a segment with a blob
# pool (PROTOCOL.md §13, the classes of `pattern::blob_classes`: 64 KiB x 32, 1 MiB x 8,
# 4 MiB x 6), blobs of 24 B, 4 KiB, 64 KiB + 1, 1 MiB and 4 MiB in turn (`--blob`, pattern
# `blob_len`), written in place by the producer, read in place by the consumer, each checked
# for its length and checksum, exactly once.
NB=${INTEROP_BLOB_MESSAGES:-25}
printf '\nblobs (%s each, up to 4 MiB):\n' "$NB"
matrix blob "$NB" --blob

# Mixed: Go and C producers share channel 0 (disjoint index ranges), Python and Rust consumers
# share it too and record what they got; the union must be every index exactly once.
segment="/dmxp_interop_$$_mixed"
segments+=("$segment")
half=$((N / 2))
$(cmd go producer) 1 "$half" 1024 --segment "$segment" >"$work/mixed.go" 2>&1 &
go_pid=$!
$(cmd c producer) 1 "$((N - half))" 1024 --segment "$segment" --first-index "$half" >"$work/mixed.c" 2>&1 &
c_pid=$!
$(cmd python consumer) 1 "$N" --segment "$segment" --idle-exit-ms 3000 --record "$work/mixed.python.rec" >"$work/mixed.python" 2>&1 &
py_pid=$!
$(cmd rust consumer) 1 "$N" --segment "$segment" --idle-exit-ms 3000 --record "$work/mixed.rust.rec" >"$work/mixed.rust" 2>&1 &
rust_pid=$!
mixed_ok=true
for pid in $go_pid $c_pid $py_pid $rust_pid; do wait "$pid" || mixed_ok=false; done
cat "$work/mixed.python.rec" "$work/mixed.rust.rec" 2>/dev/null | sort -n -k2 >"$work/mixed.all"
received=$(wc -l <"$work/mixed.all")
distinct=$(sort -u "$work/mixed.all" | wc -l)
expected=$(seq 0 $((N - 1)) | sed 's/^/0 /' | sort -n -k2)
missing=$(comm -23 <(echo "$expected" | sort) <(sort -u "$work/mixed.all") | wc -l)
echo "mixed: go+c producers -> python+rust consumers: received $received, distinct $distinct, missing $missing" \
    "(python $(wc -l <"$work/mixed.python.rec" 2>/dev/null || echo 0), rust $(wc -l <"$work/mixed.rust.rec" 2>/dev/null || echo 0))"
if ! $mixed_ok || [ "$received" -ne "$N" ] || [ "$distinct" -ne "$N" ] || [ "$missing" -ne 0 ]; then
    sed 's/^/    /' "$work"/mixed.{go,c,python,rust}
    failures+=("mixed")
fi

if [ ${#failures[@]} -ne 0 ]; then
    echo "interop: FAILED: ${failures[*]}"
    exit 1
fi
cells=$((${#languages[@]} * ${#languages[@]}))
echo "interop: all $cells cells, the $cells large-message cells, the $cells blob cells and the mixed run passed ($N messages each, $NL large, $NB blobs)"
