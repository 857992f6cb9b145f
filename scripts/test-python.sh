#!/usr/bin/env bash
# Builds the Python package and runs its tests:
#   - a virtual environment at bindings/python/.venv (git-ignored; reused when present),
#   - maturin and pytest from PyPI,
#   - `pip install ./bindings/python` (maturin builds the PyO3 extension with cargo; PyO3 comes
#     from crates.io),
#   - pytest on bindings/python/tests (it also builds the Rust examples and the `dmxp` CLI for
#     the cross-process tests).
#
#   scripts/test-python.sh [pytest arguments]
#
# Needs Python >= 3.11 with venv and pip, and a Rust toolchain. PYTHON picks the interpreter
# (default python3). Exits non-zero if the install or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
venv="$(pwd)/bindings/python/.venv"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "test-python: $PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.11 is needed" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$PYTHON" -m venv "$venv"; then
        echo "test-python: cannot create a venv with $PYTHON (on Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
py="$venv/bin/python"

echo "test-python: installing maturin and pytest"
"$py" -m pip install --quiet --disable-pip-version-check maturin pytest

echo "test-python: building and installing ./bindings/python"
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python

echo "test-python: running pytest"
cd bindings/python
exec "$py" -m pytest "$@"
