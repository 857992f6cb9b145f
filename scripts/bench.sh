#!/usr/bin/env bash
# The cross-process benchmark (docs/BENCHMARKS.md): builds dmxp-bench in release mode and runs
# every system, shape and payload with 3 repetitions, writing docs/BENCHMARKS.json and the
# chart docs/bench.svg. Extra arguments go to dmxp-bench, e.g.:
#   scripts/bench.sh --quick          # CI-sized: 0.1 s per run, well under a minute
#   scripts/bench.sh --seconds 2      # longer runs
#   scripts/bench.sh --capacity 64    # smaller rings
# OUT_JSON / OUT_CHART override where the report and the chart go.
# ICEORYX2_PEER names the iceoryx2 peer program (dmxp-bench/peers/iceoryx2, built on its own;
# without it the iceoryx2 rows are skipped with a note). INSTRUCTIONS_JSON names the output
# of scripts/instructions.sh, shown as an instr/msg column beside the throughput rows.
# Every run is bracketed by cache-line probes and reported per placement (near/far CPUs);
# --placement-threshold NS sets the near/far threshold instead of choosing it from the data.
#
# `scripts/bench.sh large [options]` runs the large-message benchmark instead (4, 64 and
# 256 KiB messages sent as runs of slots, against a Unix stream socket, a pipe and memcpy;
# docs/BENCHMARKS.md, "Large messages (runs)"), printing its tables; options go to
# `dmxp-bench large`, e.g. `scripts/bench.sh large --quick`. OUT_LARGE_JSON, if set, is where
# its JSON report goes.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_JSON=${OUT_JSON:-docs/BENCHMARKS.json}
OUT_CHART=${OUT_CHART:-docs/bench.svg}

cargo build --release -p dmxp-bench
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

echo "bench: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "bench: load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ ${1:-} == large ]]; then
    shift
    json=()
    if [[ -n ${OUT_LARGE_JSON:-} ]]; then
        json=(--json "$OUT_LARGE_JSON")
    fi
    exec "$target_dir/release/dmxp-bench" large ${json[@]+"${json[@]}"} "$@"
fi
extra=()
if [[ -n ${ICEORYX2_PEER:-} ]]; then
    extra+=(--iceoryx2-peer "$ICEORYX2_PEER")
fi
if [[ -n ${INSTRUCTIONS_JSON:-} ]]; then
    extra+=(--instructions "$INSTRUCTIONS_JSON")
fi
"$target_dir/release/dmxp-bench" --json "$OUT_JSON" --chart "$OUT_CHART" ${extra[@]+"${extra[@]}"} "$@"
