#!/usr/bin/env bash
# Instructions per message of the hot paths (docs/BENCHMARKS.md, "Instruction counts"):
# builds dmxp-bench's example `hotpath` with rustix's libc backend (valgrind cannot run
# rustix's own vDSO parsing: SIGSEGV in check_elf_base) into a target directory of its own,
# runs it under `valgrind --tool=callgrind` at 0 and ITERATIONS iterations for every mode and
# payload size, and prints (Ir(ITERATIONS) - Ir(0)) / messages per mode and size: the
# instructions of one send + receive in one thread (no second core, no cache-line transfers).
# Writes the table as JSON too, for `dmxp-bench --instructions PATH` (an instr/msg column
# beside the throughput rows). Needs valgrind; CI never runs it.
#
# Environment:
#   ITERATIONS=100000                  iterations of the measured runs
#   MODES="core core-reg facade facade-nostamp facade-waiter batch loan loan-copy inplace inplace-word arrayqueue bare-ring"
#   SIZES="32 256 960"                 payload sizes, bytes
#   INSTR_TARGET_DIR=target/libc       where the libc-backend build goes
#   OUT_JSON=target/instructions.json  where the JSON goes
set -euo pipefail
cd "$(dirname "$0")/.."

ITERATIONS=${ITERATIONS:-100000}
MODES=${MODES:-"core core-reg facade facade-nostamp facade-waiter batch loan loan-copy inplace inplace-word arrayqueue bare-ring"}
SIZES=${SIZES:-"32 256 960"}
INSTR_TARGET_DIR=${INSTR_TARGET_DIR:-target/libc}
OUT_JSON=${OUT_JSON:-target/instructions.json}

command -v valgrind >/dev/null || {
    echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
}
RUSTFLAGS="--cfg rustix_use_libc" CARGO_TARGET_DIR="$INSTR_TARGET_DIR" \
    cargo build --release -p dmxp-bench --example hotpath
bin="$INSTR_TARGET_DIR/release/examples/hotpath"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# callgrind's total instruction count of one run: `hotpath MODE N SIZE`; the messages it moved
# go to $work/messages.
collected() {
    local mode=$1 n=$2 size=$3
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$bin" "$mode" "$n" "$size" 2>"$work/err" >/dev/null || {
        cat "$work/err" >&2
        echo "instructions: $mode $n $size failed under valgrind" >&2
        exit 1
    }
    sed -n 's/.*hotpath: .* messages=\([0-9]*\).*/\1/p' "$work/err" >"$work/messages"
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/err" | tail -1
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -q . && echo "+changes" || true)
printf '%-14s %7s %12s %14s %10s\n' mode payload messages Ir instr/msg
rows=()
for mode in $MODES; do
    for size in $SIZES; do
        setup=$(collected "$mode" 0 "$size")
        total=$(collected "$mode" "$ITERATIONS" "$size")
        messages=$(cat "$work/messages")
        per=$(awk -v t="$total" -v s="$setup" -v m="$messages" 'BEGIN { printf "%.1f", (t - s) / m }')
        printf '%-14s %7s %12s %14s %10s\n' "$mode" "$size" "$messages" "$total" "$per"
        rows+=("{\"mode\":\"$mode\",\"payload\":$size,\"messages\":$messages,\"ir_setup\":$setup,\"ir_total\":$total,\"instructions_per_msg\":$per}")
    done
done

mkdir -p "$(dirname "$OUT_JSON")"
{
    printf '{"tool":"callgrind","valgrind":"%s","commit":"%s%s","iterations":%s,"rows":[\n' \
        "$(valgrind --version)" "$commit" "$dirty" "$ITERATIONS"
    sep=""
    for row in "${rows[@]}"; do
        printf '%s  %s' "$sep" "$row"
        sep=$',\n'
    done
    printf '\n]}\n'
} >"$OUT_JSON"
echo "instructions: JSON written to $OUT_JSON (dmxp-bench --instructions $OUT_JSON)"
