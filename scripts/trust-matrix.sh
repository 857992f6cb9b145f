#!/usr/bin/env bash
# The squatting matrix (PROTOCOL.md §3.4, docs/SECURITY.md): another user (nobody, through
# `setpriv`) creates a world-writable segment under a name before its real owner runs, and
# leaves a message in it. Then, as this user, the producer and consumer of every client (Rust
# examples, C, Go, Python, the `dmxp` CLI) must refuse it with the one-line "untrusted" error
# naming owner uid 65534 and mode 0666, and leave the squatter's message alone; with the
# explicit opt-in (`--trust-owner 65534 --mode 0666`) the CLI attaches and receives it.
#
#   scripts/trust-matrix.sh
#
# Needs root (to start the squatter as nobody) and the programs scripts/corruption-matrix.sh
# builds; without root it says so loudly and checks nothing. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PY=${DMXP_PYTHON:-$repo/bindings/python/.venv/bin/python}
if [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null; then
    echo "!!! trust-matrix: needs root and setpriv to act as another user: NOTHING WAS CHECKED"
    exit 0
fi

cargo build --release -q -p dmxp --example producer --example consumer || exit 1
cargo build --release -q -p dmxp-cli || exit 1
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
make -C bindings/c -s examples || exit 1
(cd bindings/go && GOPROXY=off GOTOOLCHAIN=local go build -o build/ ./cmd/producer ./cmd/consumer) || exit 1

tmp=$(mktemp -d /tmp/dmxp-trust.XXXXXX)
chmod 755 "$tmp"
cp "$target_dir/release/dmxp" "$tmp/dmxp" # where nobody may run it
name="/dmxp_trust_$$"
cleanup() {
    rm -f "/dev/shm/${name#/}"
    rm -rf "$tmp"
}
trap cleanup EXIT

as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
as_nobody "$tmp/dmxp" create --segment "$name" --channel 0 --capacity 8 --size 1M --mode 0666 >/dev/null || exit 1
as_nobody "$tmp/dmxp" send --segment "$name" --channel 0 --mode 0666 "from the squatter" >/dev/null || exit 1
owner=$(stat -c '%u %a' "/dev/shm/${name#/}")
[ "$owner" = "65534 666" ] || { echo "trust-matrix: squatter's segment is '$owner'"; exit 1; }
before=$(sha256sum "/dev/shm/${name#/}")

py_ex="$repo/bindings/python/examples"
declare -A producer=(
    [rust]="$target_dir/release/examples/producer 1 1 --segment $name --full-wait 1"
    [c]="$repo/bindings/c/build/producer 1 1 --segment $name"
    [go]="$repo/bindings/go/build/producer 1 1 --segment $name"
    [python]="$PY $py_ex/producer.py 1 1 --segment $name"
    [cli]="$target_dir/release/dmxp send --segment $name --channel 0 refused"
)
declare -A consumer=(
    [rust]="$target_dir/release/examples/consumer 1 1 --segment $name --wait 2"
    [c]="$repo/bindings/c/build/consumer 1 1 --segment $name --wait 2"
    [go]="$repo/bindings/go/build/consumer 1 1 --segment $name --wait 2"
    [python]="$PY $py_ex/consumer.py 1 1 --segment $name --wait 2"
    [cli]="$target_dir/release/dmxp recv --segment $name --channel 0 --count 1"
)
failures=()
check_refused() { # client role command...
    local client=$1 role=$2
    shift 2
    local out rc
    out=$(timeout 20 "$@" 2>&1 >/dev/null)
    rc=$?
    if [ $rc = 0 ] || [ $rc -ge 124 ] || ! grep -q "65534" <<<"$out" || ! grep -q "0666" <<<"$out" ||
        grep -qiE "traceback|panicked|^panic:|AddressSanitizer" <<<"$out" || [ "$(wc -l <<<"$out")" -gt 3 ]; then
        echo "FAIL $client $role: exit $rc: $out"
        failures+=("$client/$role")
    else
        echo "ok   $client $role refused: $(tail -n1 <<<"$out")"
    fi
}
for client in rust c go python cli; do
    # shellcheck disable=SC2086 # the commands are word lists
    check_refused "$client" producer ${producer[$client]}
    # shellcheck disable=SC2086
    check_refused "$client" consumer ${consumer[$client]}
done
after=$(sha256sum "/dev/shm/${name#/}")
[ "$before" = "$after" ] || { echo "FAIL: a refused client wrote into the segment"; failures+=(unchanged); }

# With the explicit opt-in the squatter's message is there to read (each client's own tests
# check its opt-in; here the CLI's).
out=$("$target_dir/release/dmxp" recv --segment "$name" --channel 0 --count 1 --trust-owner 65534 --mode 0666 2>&1)
if grep -q "from the squatter" <<<"$out"; then
    echo "ok   cli consumer with --trust-owner 65534 --mode 0666 attached: $out"
else
    echo "FAIL cli opt-in: $out"
    failures+=("cli/opt-in")
fi

if [ ${#failures[@]} -ne 0 ]; then
    echo "trust-matrix: FAILED: ${failures[*]}"
    exit 1
fi
echo "trust-matrix: all clients refused the squatted segment; the opt-in attached"
