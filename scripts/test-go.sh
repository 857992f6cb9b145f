#!/usr/bin/env bash
# The Go client (bindings/go): vet, unit tests under the race detector, the example programs,
# and the cross-language checks against the Rust examples.
#
#   scripts/test-go.sh
#
# Installs Debian's golang-go (Go 1.19) with apt when `go` is missing. Builds cmd/producer and
# cmd/consumer into bindings/go/build/ (git-ignored) and runs them on large messages (runs,
# PROTOCOL.md §12, with --large). The cross-language tests (interop_test.go)
# build the Rust examples with cargo and skip, saying so, when cargo is missing; this script
# also runs a Go <-> Rust round trip with the built programs. The attach-trust tests
# (PROTOCOL.md §3.4) give segments to uid 65534 and need root: run as another user they skip,
# and this script says so. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! command -v go >/dev/null 2>&1; then
    echo "test-go: go not found, installing golang-go with apt"
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y golang-go
fi
go version

cd "$root/bindings/go"
# No network for modules: the module has no dependencies outside the standard library.
export GOPROXY=off GOTOOLCHAIN=local

echo "test-go: go vet"
go vet ./...

echo "test-go: gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
    echo "test-go: not gofmt-formatted: $unformatted" >&2
    exit 1
fi

echo "test-go: go test -race"
if [ "$(id -u)" -ne 0 ]; then
    echo "test-go: not root: SKIPPING the attach-trust tests that chown a segment to uid 65534"
fi
go test -race -count=1 ./...

echo "test-go: building cmd/* into bindings/go/build/"
mkdir -p build
go build -o build/ ./cmd/producer ./cmd/consumer

# Messages longer than one slot (PROTOCOL.md §12), Go to Go: 2 channels x 2,000 messages of
# 24, 960, 961, 65536 and 262144 bytes in turn, consumer started first.
echo "test-go: large messages (runs), Go producer -> Go consumer"
large_segment="/dmxp_test_go_large_$$"
large_logs=$(mktemp -d)
rm -f "/dev/shm$large_segment"
build/consumer 2 2000 --segment "$large_segment" --wait 60 --large >"$large_logs/consumer.log" 2>&1 &
large_consumer=$!
large_status=0
build/producer 2 2000 1024 --segment "$large_segment" --size 16777216 --large >"$large_logs/producer.log" 2>&1 ||
    large_status=$?
wait "$large_consumer" || large_status=$?
tail -n 1 "$large_logs/producer.log"
tail -n 1 "$large_logs/consumer.log"
rm -f "/dev/shm$large_segment"
if [ "$large_status" -ne 0 ]; then
    echo "test-go: large messages FAILED" >&2
    cat "$large_logs/producer.log" "$large_logs/consumer.log" >&2
    rm -rf "$large_logs"
    exit 1
fi
rm -rf "$large_logs"
echo "test-go: large messages ok"

if ! command -v cargo >/dev/null 2>&1; then
    echo "test-go: cargo not found: SKIPPING the cross-language round trip with the Rust examples"
    exit 0
fi

echo "test-go: cross-language round trip with the Rust examples"
(cd "$root" && cargo build --release -p dmxp --example producer --example consumer)
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
rust="$target_dir/release/examples"
go_bin="$root/bindings/go/build"

segment="/dmxp_test_go_$$"
logs=$(mktemp -d)
cleanup() { rm -f "/dev/shm$segment"; rm -rf "$logs"; }
trap cleanup EXIT

# consumer_bin producer_bin label: 4 channels x 100,000 messages, consumer started first.
round_trip() {
    local consumer=$1 producer=$2 label=$3
    rm -f "/dev/shm$segment"
    "$consumer" 4 100000 --segment "$segment" --wait 60 >"$logs/consumer.log" 2>&1 &
    local consumer_pid=$!
    local status=0
    "$producer" 4 100000 --segment "$segment" >"$logs/producer.log" 2>&1 || status=$?
    wait "$consumer_pid" || status=$?
    tail -n 1 "$logs/producer.log"
    tail -n 1 "$logs/consumer.log"
    if [ "$status" -ne 0 ]; then
        echo "test-go: $label FAILED" >&2
        cat "$logs/producer.log" "$logs/consumer.log" >&2
        exit 1
    fi
    echo "test-go: $label ok"
}

round_trip "$rust/consumer" "$go_bin/producer" "Go producer -> Rust consumer"
round_trip "$go_bin/consumer" "$rust/producer" "Rust producer -> Go consumer"
round_trip "$go_bin/consumer" "$go_bin/producer" "Go producer -> Go consumer"
echo "test-go: all passed"
