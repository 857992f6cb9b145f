#!/usr/bin/env bash
# Client throughput, side by side in one run: for Rust, C and Go, a consumer process and a
# producer process on 4 channels x N messages (the pattern payloads, 32..144 bytes, capacity
# 1024), R runs each, alternating languages; medians of the consumer's msgs/s (first to last
# message, all channels) and ratios to Rust. Then the Python package's own benchmark (32-byte
# messages, single and batched, in-process and across processes).
#
#   scripts/bench-clients.sh [N=1000000] [R=3]
#
# Builds what it needs; the Python part needs scripts/test-python.sh to have made the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
N=${1:-1000000}
R=${2:-3}
PY=${DMXP_PYTHON:-$repo/bindings/python/.venv/bin/python}

cargo build --release -q -p dmxp --example producer --example consumer
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
make -s -C bindings/c examples
(cd bindings/go && go build -o build/ ./cmd/producer ./cmd/consumer)

out=$(mktemp -d)
trap 'rm -rf "$out"; rm -f /dev/shm/dmxp_bench_clients_$$_*' EXIT

bin() { # bin LANGUAGE ROLE
    case "$1" in
    rust) echo "$target_dir/release/examples/$2" ;;
    c) echo "$repo/bindings/c/build/$2" ;;
    go) echo "$repo/bindings/go/build/$2" ;;
    esac
}

run() { # run LANGUAGE RUN
    local name="/dmxp_bench_clients_$$_$1_$2"
    "$(bin "$1" consumer)" 4 "$N" --segment "$name" --wait 60 >"$out/consumer" 2>&1 &
    local consumer=$!
    sleep 0.2
    "$(bin "$1" producer)" 4 "$N" --segment "$name" >"$out/producer" 2>&1
    wait "$consumer"
    rm -f "/dev/shm$name"
    grep -Eq '(lost|missing) 0, duplicated 0, corrupt 0' "$out/consumer" || {
        cat "$out/consumer"
        exit 1
    }
    local rate
    rate=$(grep '^consumer: received' "$out/consumer" | sed -E 's/.*: ([0-9]+) msgs\/s.*/\1/')
    echo "$1 run $2: $rate msgs/s"
    echo "$rate" >>"$out/$1"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

languages=(rust c go)
for i in $(seq 1 "$R"); do
    for language in "${languages[@]}"; do run "$language" "$i"; done
done
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; 4 channels x $N messages, $R runs"
rust=$(median <"$out/rust")
for language in "${languages[@]}"; do
    m=$(median <"$out/$language")
    awk -v l="$language" -v m="$m" -v r="$rust" \
        'BEGIN {printf "%-5s median %10d msgs/s   %.2fx Rust\n", l, m, m / r}'
done

if "$PY" -c 'import dmxp' 2>/dev/null; then
    echo
    "$PY" bindings/python/bench/throughput.py
else
    echo "python: skipped (run scripts/test-python.sh to build the package)"
fi
