#!/usr/bin/env bash
# The main job: a producer and a consumer in two processes, 4 channels x 100,000 messages,
# on a fresh POSIX shm segment. Prints both outputs; exits non-zero if either failed (the
# consumer fails on any lost, duplicated or corrupt message).
set -euo pipefail
cd "$(dirname "$0")/.."

CHANNELS=${CHANNELS:-4}
MESSAGES=${MESSAGES:-100000}
export DMXP_SEGMENT=${DMXP_SEGMENT:-/dmxp_demo_$$}
shm_file="/dev/shm${DMXP_SEGMENT}"

cargo build --release -p dmxp --example producer --example consumer
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/examples"

out=$(mktemp -d)
cleanup() { rm -f "$shm_file"; rm -rf "$out"; }
trap cleanup EXIT

rm -f "$shm_file" # a stale segment from an earlier run
echo "demo: segment $DMXP_SEGMENT, $CHANNELS channels x $MESSAGES messages"

"$bin/consumer" "$CHANNELS" "$MESSAGES" >"$out/consumer.log" 2>&1 &
consumer_pid=$!
"$bin/producer" "$CHANNELS" "$MESSAGES" >"$out/producer.log" 2>&1 &
producer_pid=$!

producer_status=0
consumer_status=0
wait "$producer_pid" || producer_status=$?
wait "$consumer_pid" || consumer_status=$?

cat "$out/producer.log" "$out/consumer.log"
if [ "$producer_status" -ne 0 ] || [ "$consumer_status" -ne 0 ]; then
    echo "demo: FAILED (producer exit $producer_status, consumer exit $consumer_status)"
    exit 1
fi
echo "demo: ok"
