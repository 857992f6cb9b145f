#!/usr/bin/env bash
# The loom models at their full preemption bounds, not run by CI: the two models that CI runs
# one bound lower (tests/loom_common `deep_bound`) take about 8 and 9 minutes each here.
#
#   scripts/soak-loom.sh [test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
DMXP_LOOM_DEEP=1 exec scripts/loom.sh "$@"
