#!/usr/bin/env bash
# The bridge benchmark (docs/MULTI_HOST.md, "Benchmark"), not run by CI: a release build of
# dmxp-bridge and its example `bridge_bench`, then throughput (msgs/s, MB/s) and round-trip
# latency (p50, p99) at 32 B, 960 B and 64 KiB for plain Zenoh pub/sub between two processes,
# for the DMXP bridge over the same Zenoh link on loopback, and for the same-host DMXP path,
# in one run. Extra arguments go to bridge_bench, e.g.:
#   scripts/bench-bridge.sh --sizes 32 --repeat 3 --round-trips 2000
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p dmxp-bridge --bins --examples
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "bench-bridge: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
exec "$target_dir/release/examples/bridge_bench" --bridge "$target_dir/release/dmxp-bridge" "$@"
