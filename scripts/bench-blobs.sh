#!/usr/bin/env bash
# The blob-pool benchmark (docs/BENCHMARKS.md, "Zero-copy blobs"), not run by CI: builds the
# iceoryx2 peer (dmxp-bench/peers/iceoryx2, its own workspace; ICEORYX2_PEER=PATH to use a
# built one, ICEORYX2=0 to leave it out) and dmxp-bench's example `blob_bench`, then measures
# one-way latency of 32 B to 4 MiB messages (zero-copy blobs, iceoryx2's zero-copy samples,
# the copying path, the cache-line floor) and 1 MiB throughput (blobs, copies, a Unix socket)
# in one run. Extra arguments go to blob_bench, e.g.:
#   scripts/bench-blobs.sh --repeat 5 --round-trips 50000
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p dmxp-bench --example blob_bench
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
peer_args=()
if [ "${ICEORYX2:-1}" != 0 ]; then
    peer=${ICEORYX2_PEER:-}
    if [ -z "$peer" ]; then
        CARGO_TARGET_DIR="$target_dir/iceoryx2-peer" cargo build --release -q \
            --manifest-path dmxp-bench/peers/iceoryx2/Cargo.toml
        peer="$target_dir/iceoryx2-peer/release/iceoryx2-peer"
    fi
    peer_args=(--iceoryx2-peer "$peer")
fi
echo "bench-blobs: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
exec "$target_dir/release/examples/blob_bench" "${peer_args[@]}" "$@"
