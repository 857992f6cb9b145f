#!/usr/bin/env bash
# Throughput of the C examples against the Rust examples, run the same way back to back:
# consumer and producer processes on 4 channels x N messages (default lengths 32..144 bytes,
# default capacity 1024), R runs each (alternating C and Rust), medians of the consumer's
# msgs/s (first to last message received, all channels) and the producer's msgs/s.
#
#   bindings/c/bench.sh [N=1000000] [R=3]
#
# Needs bindings/c/build (make -C bindings/c examples) and the Rust examples built with
# `cargo build --release -p dmxp --example producer --example consumer` in $CARGO_TARGET_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-1000000}
R=${2:-3}
EX="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"
CB="$ROOT/bindings/c/build"
OUT=$(mktemp -d /tmp/dmxp-bench-c.XXXXXX)
trap 'rm -rf "$OUT"; rm -f /dev/shm/dmxp_bench_c_$$_*' EXIT

run() { # run <label> <producer> <consumer> <i>
    local label=$1 prod=$2 cons=$3 i=$4 name="/dmxp_bench_c_$$_${1}_$4"
    "$cons" 4 "$N" --segment "$name" --wait 60 >"$OUT/cons" 2>&1 &
    local cpid=$!
    sleep 0.2
    "$prod" 4 "$N" --segment "$name" >"$OUT/prod" 2>&1
    wait "$cpid"
    local c p
    c=$(grep '^consumer: received' "$OUT/cons" | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
    p=$(grep '^producer: sent' "$OUT/prod" | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
    grep -q 'lost 0, duplicated 0, corrupt 0' "$OUT/cons" || { cat "$OUT/cons"; exit 1; }
    rm -f "/dev/shm${name}"
    echo "$label run $i: consumer $c msgs/s, producer $p msgs/s"
    echo "$c $p" >>"$OUT/$label"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for i in $(seq 1 "$R"); do
    run c "$CB/producer" "$CB/consumer" "$i"
    run rust "$EX/producer" "$EX/consumer" "$i"
done
for label in c rust; do
    echo "$label: median consumer $(cut -d' ' -f1 "$OUT/$label" | median) msgs/s," \
        "median producer $(cut -d' ' -f2 "$OUT/$label" | median) msgs/s ($R runs of 4 x $N)"
done
