#!/usr/bin/env bash
# Instructions per message of the C client's hot paths (bench/hotpath.c) under callgrind:
# (Ir(N) - Ir(0)) / N for each mode and length, unregistered and registered.
#
#   bindings/c/bench/callgrind.sh [N=100000] [INCLUDE_DIR=bindings/c]
#
# INCLUDE_DIR: where the dmxp.h to measure is (a copy of an older header, to compare).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:-100000}
inc=$(cd "${2:-$here/..}" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -std=c11 -Wall -Wextra -Werror -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -O2 -I"$inc" "$here/hotpath.c" -o "$out/hotpath"
ir() { # ir ARGS...: total instructions of one run
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$out/hotpath" "$@" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-10s %5s %-5s %12s\n' mode len reg "Ir/message"
for reg in "" --reg; do
    for mode in single timeout batch16; do
        for len in 32 256 960; do
            base=$(ir "$mode" "$len" 0 $reg)
            full=$(ir "$mode" "$len" "$N" $reg)
            awk -v m="$mode" -v l="$len" -v r="${reg:-no}" -v b="$base" -v f="$full" -v n="$N" \
                'BEGIN {printf "%-10s %5d %-5s %12.1f\n", m, l, r == "--reg" ? "yes" : "no", (f - b) / n}'
        done
    done
    base=$(ir empty 0 0 $reg)
    full=$(ir empty 0 "$N" $reg)
    awk -v r="${reg:-no}" -v b="$base" -v f="$full" -v n="$N" \
        'BEGIN {printf "%-10s %5s %-5s %12.1f\n", "empty", "-", r == "--reg" ? "yes" : "no", (f - b) / n}'
done
