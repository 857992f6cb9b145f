#!/usr/bin/env bash
# Crash churn soak, not run by CI (it takes minutes): producers and consumers in Rust (the dmxp
# CLI) and Python are killed with SIGKILL and restarted every 50-500 ms on one channel; then the
# channel must still flow, the peer table stay bounded, nothing arrive twice, and what is
# missing be explained by the kills. scripts/soak_churn.py has the details.
#
#   scripts/soak-churn.sh [--seconds 180]
#
# Needs the Python package (scripts/test-python.sh builds it into bindings/python/.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${DMXP_PYTHON:-$PWD/bindings/python/.venv/bin/python}
cargo build --release -q -p dmxp-cli
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
exec "$PY" scripts/soak_churn.py --dmxp "$target_dir/release/dmxp" --python "$PY" "$@"
