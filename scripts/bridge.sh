#!/usr/bin/env bash
# Across the Zenoh bridge in two languages: a Python producer on segment A -> an export bridge
# -> Zenoh on 127.0.0.1 (explicit endpoint, no scouting) -> an import bridge -> a Go consumer
# on segment B, N messages (default 20,000) checked for their checksums, exactly once; then
# both bridges' final counters must agree with what was sent.
#
#   scripts/bridge.sh      (after scripts/test-go.sh and test-python.sh built the clients)
#   BRIDGE_MESSAGES=100000 scripts/bridge.sh
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

N=${BRIDGE_MESSAGES:-20000}
PY=${DMXP_PYTHON:-$repo/bindings/python/.venv/bin/python}

# The debug binaries the test step built (the integration tests run them): the same command
# rebuilds nothing after it. Another feature set, or a release build, would compile Zenoh
# again, which takes minutes.
cargo test -q --workspace --all-features --no-run || exit 1
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bridge=$target_dir/debug/dmxp-bridge
dmxp=$target_dir/debug/dmxp
(cd bindings/go && go build -o build/ ./cmd/consumer) || exit 1
if ! "$PY" -c 'import dmxp' 2>/dev/null; then
    echo "bridge: the Python package is not installed at $PY (run scripts/test-python.sh first)" >&2
    exit 1
fi

work=$(mktemp -d)
a="/dmxp_bridge_$$_a"
b="/dmxp_bridge_$$_b"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    rm -f "/dev/shm$a" "/dev/shm$b"
    rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE PATTERN: until a line of FILE matches (hang guard 120 s).
wait_for() {
    for _ in $(seq 1200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bridge: no '$2' in $1 after 120 s:" >&2
    sed 's/^/    /' "$1" >&2
    return 1
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="tcp/127.0.0.1:$port"
"$dmxp" create --segment "$a" --channel 0 --capacity 1024 >/dev/null || exit 1
"$bridge" --host hosta --listen "$endpoint" --export "$a:0=dmxp/hosta/a/0" \
    --stats-interval-ms 0 >"$work/export.out" 2>"$work/export.err" &
export_pid=$!
pids+=("$export_pid")
wait_for "$work/export.out" '"event":"ready"' || exit 1
"$bridge" --host hostb --connect "$endpoint" --import "dmxp/hosta/**=$b:0" \
    --create-capacity 1024 --full-timeout-ms 600000 \
    --stats-interval-ms 0 >"$work/import.out" 2>"$work/import.err" &
import_pid=$!
pids+=("$import_pid")
wait_for "$work/import.out" '"event":"ready"' || exit 1

started=$(date +%s.%N)
bindings/go/build/consumer 1 "$N" --segment "$b" --wait 60 >"$work/consumer" 2>&1 &
consumer_pid=$!
"$PY" bindings/python/examples/producer.py 1 "$N" 1024 --segment "$a" >"$work/producer" 2>&1
producer_status=$?
wait "$consumer_pid"
consumer_status=$?
elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")

kill -TERM "$import_pid" "$export_pid"
wait "$import_pid"
import_status=$?
wait "$export_pid"
export_status=$?
pids=()

echo "python producer -> export bridge -> zenoh -> import bridge -> go consumer: $N messages in ${elapsed}s"
echo "  consumer: $(tail -n 1 "$work/consumer")"
verdict=$("$PY" - "$work/export.out" "$work/import.out" "$N" <<'PYEOF'
import json, sys

def final(path):
    for line in open(path):
        report = json.loads(line)
        if report["event"] == "final":
            return report["routes"][0]
    raise SystemExit(f"no final report in {path}")

exported, imported, n = final(sys.argv[1]), final(sys.argv[2]), int(sys.argv[3])
print(f"  export: {json.dumps(exported)}")
print(f"  import: {json.dumps(imported)}")
wrong = [f"export published {exported['published']}"] if exported["published"] != n else []
wrong += [f"import {k} {imported[k]}" for k in ("received", "delivered") if imported[k] != n]
wrong += [f"import {k} {imported[k]}" for k in
          ("malformed", "looped", "dropped_full", "rejected", "gaps") if imported[k] != 0]
print("  counters: " + ("; ".join(wrong) if wrong else "agree with the messages sent"))
sys.exit(1 if wrong else 0)
PYEOF
)
counters_status=$?
echo "$verdict"
if [ "$producer_status" -ne 0 ] || [ "$consumer_status" -ne 0 ] || [ "$import_status" -ne 0 ] ||
    [ "$export_status" -ne 0 ] || [ "$counters_status" -ne 0 ]; then
    echo "bridge: FAILED (producer $producer_status, consumer $consumer_status, import bridge" \
        "$import_status, export bridge $export_status, counters $counters_status)"
    for f in producer consumer export.err import.err; do
        echo "  $f:"
        sed 's/^/    /' "$work/$f"
    done
    exit 1
fi
echo "bridge: python -> go across two bridges passed"
