#!/usr/bin/env bash
# Builds the Python package as the one wheel users install, and tests that wheel:
#   1. a build environment at bindings/python/.venv (git-ignored; reused when present) with
#      maturin, pytest and ruff from PyPI; `ruff check` and a Python 3.9 syntax check of the
#      package, its tests and examples (the package supports 3.9+; only one interpreter may be
#      installed here, so that is checked statically);
#   2. `maturin build --release`: one abi3 wheel (`dmxp-*-cp39-abi3-manylinux_*.whl`, for
#      every CPython >= 3.9) in bindings/python/target/dist (emptied each run); its name and
#      size are printed;
#   3. a fresh virtual environment, bindings/python/.venv-wheel (git-ignored; recreated each
#      run), into which that wheel file is installed with no compiler reachable (PATH=/usr/bin:
#      /bin, CARGO=false, RUSTC=false, and --only-binary :all:, so pip cannot fall back to a
#      source build): proof that installing the wheel needs no Rust toolchain. pytest, and
#      numpy (which the tests write received messages into; not a dependency of the package),
#      come from bindings/python/target/wheelhouse (downloaded from PyPI once);
#   4. the same wheel installed into bindings/python/.venv too (--force-reinstall), whose
#      interpreter scripts/interop.sh, corruption-matrix.sh and soak-churn.sh use;
#   5. pytest on bindings/python/tests with the fresh environment's interpreter. The tests
#      build the Rust examples and the `dmxp` CLI with cargo for the cross-process and
#      agreement tests: that is the test harness, not the package.
#
#   scripts/test-python.sh [pytest arguments]
#
# Needs Python >= 3.9 with venv and pip, and a Rust toolchain (to build the wheel). PYTHON
# picks the interpreter (default python3). Exits non-zero if the build, the install, the
# checks or any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$SECONDS

PYTHON=${PYTHON:-python3}
pkg="$repo/bindings/python"
venv="$pkg/.venv"
wheel_venv="$pkg/.venv-wheel"
dist="$pkg/target/dist"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
    echo "test-python: $PYTHON is $("$PYTHON" --version 2>&1); Python >= 3.9 is needed" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$PYTHON" -m venv "$venv"; then
        echo "test-python: cannot create a venv with $PYTHON (on Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
fi
py="$venv/bin/python"
pip=("$py" -m pip --quiet --disable-pip-version-check)
# `pip --python` (below) needs pip >= 22.3; an older Python's bundled pip may be older.
if ! "$py" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (22, 3))'; then
    "${pip[@]}" install --upgrade 'pip>=22.3'
fi

echo "test-python: installing maturin, pytest and ruff into bindings/python/.venv"
"${pip[@]}" install 'maturin>=1.9,<2' pytest ruff

echo "test-python: ruff check and a Python 3.9 syntax check"
(cd "$pkg" && "$venv/bin/ruff" check --no-cache --quiet .)
"$py" - "$pkg" <<'EOF'
import ast, pathlib, sys
root = pathlib.Path(sys.argv[1])
files = [
    p
    for d in ("python", "tests", "examples", "bench")
    for p in sorted((root / d).rglob("*"))
    if p.suffix in (".py", ".pyi")
]
bad = 0
for path in files:
    try:
        ast.parse(path.read_text(), str(path), feature_version=(3, 9))
    except SyntaxError as e:
        print(f"test-python: not Python 3.9 syntax: {e.filename}:{e.lineno}: {e.msg}")
        bad += 1
sys.exit(1 if bad else 0)
EOF

echo "test-python: building the wheel (maturin build --release)"
rm -rf "$dist"
build_start=$SECONDS
(cd "$pkg" && "$venv/bin/maturin" build --release --out "$dist")
wheels=("$dist"/dmxp-*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "test-python: expected one wheel in $dist, found: ${wheels[*]}" >&2
    exit 1
fi
wheel=${wheels[0]}
case $(basename "$wheel") in
*-cp39-abi3-*) ;;
*)
    echo "test-python: $(basename "$wheel") is not an abi3 (cp39-abi3) wheel" >&2
    exit 1
    ;;
esac
echo "test-python: wheel $(basename "$wheel") ($(stat -c %s "$wheel") bytes, built in $((SECONDS - build_start)) s)"

echo "test-python: installing the wheel into a fresh bindings/python/.venv-wheel, no compiler on PATH"
install_start=$SECONDS
# pytest, numpy and their dependencies for that environment, as wheels kept between runs (no
# index query each run; delete the directory to refresh them).
wheelhouse="$pkg/target/wheelhouse"
test_deps=(pytest numpy)
for dep in "${test_deps[@]}"; do
    if ! compgen -G "$wheelhouse/$dep-*.whl" >/dev/null; then
        "${pip[@]}" download --only-binary :all: --dest "$wheelhouse" "$dep"
    fi
done
rm -rf "$wheel_venv"
# No pip of its own (ensurepip takes seconds): the build environment's pip installs into it
# (`pip --python`), running under the new environment's interpreter.
"$PYTHON" -m venv --without-pip "$wheel_venv"
no_compiler=(env PATH=/usr/bin:/bin CARGO=false RUSTC=false)
if "${no_compiler[@]}" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
    echo "test-python: note: a Rust toolchain is in /usr/bin; --only-binary still forbids building"
fi
"${no_compiler[@]}" "$py" -m pip --python "$wheel_venv/bin/python" --quiet \
    --disable-pip-version-check install --no-compile --no-index --find-links "$wheelhouse" \
    --only-binary :all: "$wheel" "${test_deps[@]}"
"${no_compiler[@]}" "$wheel_venv/bin/python" - "$wheel_venv" <<'PY'
import pathlib, sys
import dmxp, dmxp._dmxp
venv = pathlib.Path(sys.argv[1]).resolve()
where = pathlib.Path(dmxp._dmxp.__file__).resolve()
assert venv in where.parents, f"dmxp imported from {where}, not from {venv}"
print(f"test-python: {where.relative_to(venv)} imports on Python {sys.version.split()[0]}")
PY

echo "test-python: installing the same wheel into bindings/python/.venv (for the other scripts)"
"${pip[@]}" install --force-reinstall --no-deps "$wheel"
echo "test-python: installed in $((SECONDS - install_start)) s"

echo "test-python: running pytest with the wheel's environment ($((SECONDS - start)) s so far)"
cd "$pkg"
status=0
# The numpy tests must run here, not be skipped.
DMXP_TEST_NUMPY=1 "$wheel_venv/bin/python" -m pytest "$@" || status=$?
echo "test-python: done in $((SECONDS - start)) s"
exit "$status"
