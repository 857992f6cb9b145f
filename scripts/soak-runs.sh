#!/usr/bin/env bash
# Large-message soak, not run by CI (it moves gigabytes): messages longer than one slot
# (PROTOCOL.md §12) between 4 producers and 4 consumers,
#   1. in threads: 10^5 messages of 1 B to 256 KiB (log-uniform), checked byte for byte,
#      exactly once, each producer's in order (dmxp-nostd/tests/runs.rs, release build);
#   2. across processes: 4 producer and 4 consumer processes of the Rust examples on one
#      channel with --large (24 B, 960 B, 961 B, 64 KiB, 256 KiB in turn, checksummed), every
#      index exactly once over the union of what the consumers recorded.
#
#   scripts/soak-runs.sh [MESSAGES_PER_PRODUCER]     (default 5000 for the process part)
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-5000}

echo "== threads: 4 x 4, 10^5 messages"
cargo test --release -q -p dmxp-nostd --all-features --test runs \
    four_producers_and_four_consumers -- --ignored

echo "== processes: 4 producers x 4 consumers, $per messages each"
cargo build --release -q -p dmxp --example producer --example consumer
bin=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples
segment="/dmxp_soak_runs_$$"
work=$(mktemp -d)
trap 'rm -f /dev/shm$segment; rm -rf "$work"' EXIT
total=$((4 * per))
"$bin/producer" 1 0 1024 --segment "$segment" --large --size $((64 << 20)) >/dev/null
consumers=()
for c in 1 2 3 4; do
    "$bin/consumer" 1 "$total" --segment "$segment" --large --idle-exit-ms 5000 \
        --record "$work/c$c.rec" >"$work/c$c.log" 2>&1 &
    consumers+=("$!")
done
start=$SECONDS
producers=()
for p in 0 1 2 3; do
    "$bin/producer" 1 "$per" 1024 --segment "$segment" --large --first-index $((p * per)) \
        >"$work/p$p.log" 2>&1 &
    producers+=("$!")
done
ok=true
for pid in "${producers[@]}"; do wait "$pid" || ok=false; done
for pid in "${consumers[@]}"; do wait "$pid" || true; done
cat "$work"/c*.rec >"$work/all"
received=$(wc -l <"$work/all")
distinct=$(sort -u "$work/all" | wc -l)
echo "received $received, distinct $distinct, of $total, in $((SECONDS - start)) s (with 5 s idle exit)"
grep -h "corrupt" "$work"/c*.log | sed 's/^/  /'
if ! $ok || [ "$received" -ne "$total" ] || [ "$distinct" -ne "$total" ] ||
    grep -q "corrupt [1-9]" "$work"/c*.log; then
    echo "soak-runs: FAILED"
    cat "$work"/p*.log
    exit 1
fi
echo "soak-runs: ok"
