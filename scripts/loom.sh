#!/usr/bin/env bash
# Loom model checks of the dmxp-nostd ring and channel creation (dmxp-nostd/tests/loom.rs), of
# the blob pool's allocator (dmxp-nostd/tests/loom_blob.rs)
# and of the event-loop wait, PROTOCOL.md §7.4 (dmxp-nostd/tests/loom_async.rs).
#
# Builds with `--cfg loom` in its own target directory, so the flag does not invalidate the
# normal build. Each model picks its own preemption bound; set LOOM_MAX_PREEMPTIONS to override
# all of them (higher bounds explore more and take much longer). The two costliest models run
# one bound lower unless DMXP_LOOM_DEEP=1 (scripts/soak-loom.sh). The models run two at a
# time (loom keeps each execution's state per thread), so the longest take both cores once
# the Miri run beside them is done. Extra arguments go to the test binary, e.g.
# `scripts/loom.sh wrap_around` or `scripts/loom.sh --include-ignored`.
# Exits non-zero when a model fails.
set -euo pipefail

cd "$(dirname "$0")/.."

export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom"

exec cargo test -p dmxp-nostd --test loom --test loom_async --test loom_blob --release -- --nocapture --test-threads=2 "$@"
