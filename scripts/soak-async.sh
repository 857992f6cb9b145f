#!/usr/bin/env bash
# Async-wait soak, not run by CI (issue #12): 10^6 async round trips between two processes,
# both sides on a current-thread tokio runtime waiting with receive_async / send_async on
# rings of 2 slots (so both not_empty and not_full waits happen, PROTOCOL.md §7.4). A lost
# wake-up fails the run as soon as one round trip takes longer than 5 s (the watchdog of the
# soak run; the same test in CI runs 2*10^4 / 2*10^5 round trips with a 60 s bound per wait).
# Release build of dmxp/tests/async_tokio.rs,
# async_round_trips_between_two_processes_lose_no_wake_up.
#
#   scripts/soak-async.sh [ROUND_TRIPS]     (default 1000000)
#   DMXP_ASYNC_POLL=1 scripts/soak-async.sh  # the same over the polling fallback (slower)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1000000}

cargo test --release -q -p dmxp --features tokio,file --test async_tokio --no-run
echo "== $rounds async round trips between two processes (watchdog: 5 s without progress)"
start=$SECONDS
DMXP_SOAK_ASYNC_ROUNDS=$rounds cargo test --release -q -p dmxp --features tokio,file \
    --test async_tokio -- --exact async_round_trips_between_two_processes_lose_no_wake_up \
    --nocapture
echo "== soak-async: $rounds round trips passed in $((SECONDS - start)) s"
