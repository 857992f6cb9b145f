#!/usr/bin/env bash
# Builds and tests the C client (bindings/c): the ASan/UBSan tests, the TSan stress test, the
# golden segment, the include order, the examples' refusal of another user's segment (as
# root), the C++ test (dmxp.h as C++17, with the header compiled as C in the same program),
# the cross-language checks of the C and C++ clients against the Rust examples in both
# directions, and `make install` (pkg-config and CMake builds against the installed copy).
# gcc and g++; needs cargo for the Rust side. Missing g++, pkg-config or cmake are installed
# with apt-get when run as root (DMXP_C_NO_APT=1: never); what still cannot run is skipped
# with a loud message. Exits non-zero on any failure.
#
#   scripts/test-c.sh
#
# Environment: CARGO_TARGET_DIR (where the Rust examples are built; default ./target),
# DMXP_C_STRESS (messages per producer thread in the ASan stress run, default 200000),
# CC / CXX (default gcc / g++), DMXP_C_NO_APT (1: install nothing).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C="$ROOT/bindings/c"
B="$C/build"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
EX="$TARGET/release/examples"
TMP=$(mktemp -d /tmp/dmxp-test-c.XXXXXX)
PREFIX="/dmxp_testc_$$"
failures=()

cleanup() {
    rm -f /dev/shm/"${PREFIX#/}"_* 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    local start=$SECONDS
    if "$@"; then
        echo "<== $name: ok ($((SECONDS - start)) s)"
    else
        echo "<== $name: FAILED ($((SECONDS - start)) s)"
        failures+=("$name")
    fi
}

skip() { # skip <what>: a loud line for a check that did not run
    echo
    echo "!!! SKIP: $*"
    skipped+=("$1")
}
skipped=()

# Makes command $1 available: present, or installed from the Debian package $2 (as root, with
# apt-get; the current package lists first, then after an apt-get update). 1 if still missing.
ensure_tool() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null && return 0
    if [ "${DMXP_C_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "note: $cmd not found: installing the Debian package $pkg"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "$pkg" >"$TMP/apt.log" 2>&1 ||
            { apt-get update -qq >>"$TMP/apt.log" 2>&1 && apt-get install -y -qq "$pkg" >>"$TMP/apt.log" 2>&1; } ||
            { echo "warning: could not install $pkg:"; tail -3 "$TMP/apt.log" | sed 's/^/    /'; }
    fi
    command -v "$cmd" >/dev/null
}

# --- build ------------------------------------------------------------------------------------
CXX=${CXX:-g++}
have_cxx=1
if ! ensure_tool "$CXX" g++; then
    have_cxx=0
    echo
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! NO C++ COMPILER ($CXX not found, not installable): dmxp.h was NOT checked as C++,"
    echo "!!! and test_cpp, test_include_order_cpp and the C++ interop steps do NOT run"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    skipped+=("C++ (no $CXX)")
fi
export CXX
step "build (make -C bindings/c -j2 all)" make -C "$C" -s -j2 all || true
if [ ! -x "$B/producer" ] || [ ! -x "$B/consumer" ]; then
    echo "FAILED: the C build did not produce the examples"
    exit 1
fi

# --- ASan/UBSan tests -------------------------------------------------------------------------
for t in test_golden test_validation test_ring test_process test_trust test_revoke test_peers \
    test_repair test_pending test_unblock test_waiters test_runs test_wait_fd test_copy test_two_units \
    test_blob test_blob_process; do
    step "$t (ASan+UBSan)" "$B/$t"
done
step "test_stress 4x4 (ASan+UBSan)" "$B/test_stress_asan" "${DMXP_C_STRESS:-200000}"
step "epoll_consumer: 4 channels on one epoll loop, from a forked producer" \
    "$B/epoll_consumer" 4 20000

# --- Include order and C++ ----------------------------------------------------------------------
# dmxp.h after <stdio.h>, <stdlib.h>, <string.h> in strict -std=c11 (no feature macro) works:
# clock, shm and file segments, liveness (and the same source as C++17).
step "test_include_order: dmxp.h after <stdio.h> <stdlib.h> <string.h>, -std=c11 (ASan+UBSan)" \
    "$B/test_include_order"
# Every common system header first, alone, as C11 and C++17 (and clang, clang++ if present).
step "check-header: dmxp.h after each system header, C11 and C++17, warning-free" \
    make -C "$C" -s check-header
if [ $have_cxx = 1 ]; then
    step "test_include_order_cpp: the same as C++17 (ASan+UBSan)" "$B/test_include_order_cpp"
    step "dmxp.h alone: $CXX -std=c++17 -Wall -Wextra -Werror -fsyntax-only" \
        "$CXX" -std=c++17 -Wall -Wextra -Werror -fsyntax-only -x c++ "$C/dmxp.h"
    # Layout C == C++, byte-identical segments, handles shared by C and C++ code, ring,
    # batches, the golden segment, blocking, std::thread MPMC exactly once.
    step "test_cpp: in-process C++17 checks (ASan+UBSan)" "$B/test_cpp"
fi
if command -v clang++ >/dev/null; then
    echo "note: clang++ found: check-header compiled every unit with clang and clang++ too"
else
    echo "note: clang++ not installed: dmxp.h was checked with ${CC:-gcc} and $CXX only"
fi

# --- The examples and a segment they must not trust (PROTOCOL.md §3.4) ------------------------
# A segment handed to another user (uid 65534, mode 0666): both examples refuse it with one
# line naming owner and mode and exit 1; --trust-owner alone is not enough; with --mode too
# they use it. Needs root (chown).
refuses() { # refuses <label> <command...>: exit 1 with exactly one line on stderr, naming owner and mode
    local label=$1 rc
    shift
    "$@" >"$TMP/trust.out" 2>"$TMP/trust.err"
    rc=$?
    echo "$label: exit $rc: $(cat "$TMP/trust.err")"
    [ $rc = 1 ] && [ "$(wc -l <"$TMP/trust.err")" = 1 ] &&
        grep -q "owned by uid 65534 with mode 0666" "$TMP/trust.err"
}
examples_trust() {
    local name="${PREFIX}_untrusted"
    local file="/dev/shm/${name#/}"
    "$B/producer" 1 4 8 --segment "$name" >/dev/null || return 1
    chown 65534:65534 "$file" && chmod 0666 "$file" || return 1
    refuses "consumer (default)" "$B/consumer" 1 4 --segment "$name" --wait 2 || return 1
    refuses "producer (default)" "$B/producer" 1 4 --segment "$name" || return 1
    refuses "consumer --trust-owner 65534" "$B/consumer" 1 4 --segment "$name" --wait 2 \
        --trust-owner 65534 || return 1
    refuses "producer --mode 0666" "$B/producer" 1 4 --segment "$name" --mode 0666 || return 1
    "$B/consumer" 1 4 --segment "$name" --wait 2 --trust-owner 65534 --mode 0666 || return 1
    "$B/producer" 1 4 --segment "$name" --trust-owner 65534 --mode 0666 || return 1
    "$B/consumer" 1 4 --segment "$name" --wait 2 --trust-owner 65534 --mode 0666 || return 1
}
if [ "$(id -u)" = 0 ]; then
    step "examples refuse another user's segment; --trust-owner with --mode accepts it" examples_trust
else
    echo
    echo "!!! SKIP: not root, so the examples' refusal of another user's segment was NOT checked"
fi

# --- TSan stress ------------------------------------------------------------------------------
# Probe whether the TSan runtime starts on this kernel (it can fail on some ASLR layouts); if
# not, retry under `setarch -R` (ASLR off for that process).
tsan_prefix=()
tsan_ok=1
if ! "$B/test_stress_tsan" 10 >"$TMP/tsan_probe" 2>&1; then
    if grep -q "ThreadSanitizer" "$TMP/tsan_probe" && ! grep -q "WARNING: ThreadSanitizer" "$TMP/tsan_probe"; then
        if command -v setarch >/dev/null && setarch "$(uname -m)" -R "$B/test_stress_tsan" 10 >"$TMP/tsan_probe2" 2>&1; then
            tsan_prefix=(setarch "$(uname -m)" -R)
            echo "note: TSan needs ASLR disabled here; running it under setarch -R"
        else
            tsan_ok=0
        fi
    fi
fi
if [ $tsan_ok = 1 ]; then
    step "test_stress 4x4 (TSan)" env TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
        "${tsan_prefix[@]}" "$B/test_stress_tsan" 50000
    step "test_runs stress: runs of 1 B..64 KiB, 2x2 threads (TSan)" \
        env TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "${tsan_prefix[@]}" \
        "$B/test_runs_tsan" stress 400
    if [ $have_cxx = 1 ]; then
        step "test_cpp: in-process C++17 checks (TSan)" \
            env TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" "${tsan_prefix[@]}" "$B/test_cpp_tsan"
    fi
else
    echo
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!!! TSan CANNOT RUN ON THIS MACHINE: the threaded stress test was NOT run under TSan"
    sed 's/^/!!!   /' "$TMP/tsan_probe" | head -5
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    failures+=("TSan unavailable")
fi

# --- Cross-language checks against the Rust examples ------------------------------------------
echo
echo "==> building the Rust examples (cargo build --release -p dmxp --example producer --example consumer)"
if ! (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build -q --release -p dmxp --example producer --example consumer); then
    echo "FAILED: could not build the Rust examples"
    exit 1
fi
RP="$EX/producer"
RC="$EX/consumer"

seg() { echo "${PREFIX}_$1"; }

# A C producer fills a segment and exits; then the other side reads it (and the reverse).
after() { # after <producer> <consumer> <name> <channels> <count> [producer args...]
    local prod=$1 cons=$2 name=$3 ch=$4 n=$5
    shift 5
    "$prod" "$ch" "$n" "$@" --segment "$name" || return 1
    "$cons" "$ch" "$n" --segment "$name" --wait 10 || return 1
}

# Producer and consumer at the same time (consumer first: it waits for the segment).
concurrent() { # concurrent <producer> <consumer> <name> <channels> <count> [producer args...]
    local prod=$1 cons=$2 name=$3 ch=$4 n=$5
    shift 5
    "$cons" "$ch" "$n" --segment "$name" --wait 20 >"$TMP/cons.out" 2>&1 &
    local cpid=$!
    "$prod" "$ch" "$n" "$@" --segment "$name"
    local prc=$?
    wait $cpid
    local crc=$?
    cat "$TMP/cons.out"
    [ $prc = 0 ] && [ $crc = 0 ]
}

step "C-written segment read by the Rust consumer (4 x 1000, producer exits first)" \
    after "$B/producer" "$RC" "$(seg c2r_after)" 4 1000
step "Rust-written segment read by the C consumer (4 x 1000, producer exits first)" \
    after "$RP" "$B/consumer" "$(seg r2c_after)" 4 1000
step "C producer -> Rust consumer, 2 x 100000 through rings of 64 (many laps)" \
    concurrent "$B/producer" "$RC" "$(seg c2r)" 2 100000 64
step "Rust producer -> C consumer, 2 x 100000 through rings of 64 (many laps)" \
    concurrent "$RP" "$B/consumer" "$(seg r2c)" 2 100000 64
step "C producer --batch 16 -> Rust consumer, 2 x 50000, rings of 32" \
    concurrent "$B/producer" "$RC" "$(seg c2r_batch)" 2 50000 32 --batch 16
step "Rust producer --batch 16 -> C consumer, 2 x 50000, rings of 32" \
    concurrent "$RP" "$B/consumer" "$(seg r2c_batch)" 2 50000 32 --batch 16

# Messages longer than one slot (PROTOCOL.md §12), C to C: --large lengths {24, 960, 961,
# 65536, LIMIT} with the default limit of 262144 bytes, through rings of 1024 (and batches),
# and a segment read after its producer exited (a ring of 1024 holds 10 such messages).
c_large() { "$B/consumer" "$@" --large; }
step "C producer --large -> C consumer --large, 2 x 3000, rings of 1024" \
    concurrent "$B/producer" c_large "$(seg c2c_large)" 2 3000 1024 --large
step "C producer --large --batch 16 -> C consumer --large, 2 x 3000, rings of 1024" \
    concurrent "$B/producer" c_large "$(seg c2c_large_batch)" 2 3000 1024 --large --batch 16
step "C-written --large segment read by the C consumer (2 x 10, producer exits first)" \
    after "$B/producer" c_large "$(seg c2c_large_after)" 2 10 1024 --large

# The Rust validator, when the dmxp CLI builds: a C-written segment must validate.
if (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build -q --release -p dmxp-cli 2>"$TMP/cli.err"); then
    inspect() {
        local name
        name=$(seg inspect)
        "$B/producer" 3 8 8 --segment "$name" >/dev/null || return 1
        "$TARGET/release/dmxp" inspect --segment "$name"
    }
    step "dmxp inspect accepts a C-written segment" inspect
else
    echo
    echo "note: dmxp-cli did not build; skipping 'dmxp inspect' (the Rust consumer checks above validate C-written segments)"
fi

# One channel, two producers (C and Rust, disjoint indices) and two consumers (C and Rust,
# idle exit), a ring of 16: every message received exactly once overall, checksums verified
# by each consumer.
mixed() {
    local name n=50000
    name=$(seg mixed)
    "$B/producer" 1 0 16 --segment "$name" >/dev/null || return 1 # create the ring of 16
    "$B/consumer" 1 $n --segment "$name" --idle-exit-ms 2000 --record "$TMP/c.rec" >"$TMP/c.out" 2>&1 &
    local c1=$!
    "$RC" 1 $n --segment "$name" --idle-exit-ms 2000 --record "$TMP/r.rec" >"$TMP/r.out" 2>&1 &
    local c2=$!
    "$B/producer" 1 $n --segment "$name" --first-index 0 >"$TMP/p1.out" 2>&1 &
    local p1=$!
    "$RP" 1 $n --segment "$name" --first-index $n >"$TMP/p2.out" 2>&1 &
    local p2=$!
    local rc=0
    for p in $p1 $p2 $c1 $c2; do wait "$p" || rc=1; done
    cat "$TMP/p1.out" "$TMP/p2.out" "$TMP/c.out" "$TMP/r.out" | grep -v "channel 0:"
    [ $rc = 0 ] || { echo "a producer or consumer failed"; return 1; }
    local total unique expected
    total=$(cat "$TMP/c.rec" "$TMP/r.rec" | wc -l)
    unique=$(cat "$TMP/c.rec" "$TMP/r.rec" | sort -u | wc -l)
    expected=$(seq 0 $((2 * n - 1)) | sed 's/^/0 /' | sort)
    echo "mixed: C consumer got $(wc -l <"$TMP/c.rec"), Rust consumer got $(wc -l <"$TMP/r.rec"); $total lines, $unique distinct, $((2 * n)) sent"
    [ "$total" = $((2 * n)) ] && [ "$unique" = $((2 * n)) ] &&
        [ "$(cat "$TMP/c.rec" "$TMP/r.rec" | sort)" = "$expected" ]
}
step "mixed: C + Rust producers, C + Rust consumers on one ring of 16, exactly once" mixed

# --- The C++ client against the Rust examples ----------------------------------------------------
# test_cpp producer / consumer: the examples' command lines, written in C++ (one std::thread
# per channel; the consumer verifies every payload and fails on a missing, duplicated, corrupt
# or lost message).
cpp_producer() { "$B/test_cpp" producer "$@"; }
cpp_consumer() { "$B/test_cpp" consumer "$@"; }
cpp_consumer_batch() { "$B/test_cpp" consumer "$@" --batch 16; }
cpp_detects_missing() { # the C++ consumer fails when a message never comes
    local name
    name=$(seg cpp_short)
    "$RP" 2 10 --segment "$name" >/dev/null || return 1
    if "$B/test_cpp" consumer 2 11 --segment "$name" --wait 1 2>"$TMP/short.err"; then
        echo "the C++ consumer passed with 10 of 11 messages"
        return 1
    fi
    cat "$TMP/short.err"
    grep -q "DMXP_E_TIMEOUT after 10 messages" "$TMP/short.err"
}
if [ $have_cxx = 1 ]; then
    step "C++-written segment read by the Rust consumer (4 x 1000, producer exits first)" \
        after cpp_producer "$RC" "$(seg cpp2r_after)" 4 1000
    step "Rust-written segment read by the C++ consumer (4 x 1000, producer exits first)" \
        after "$RP" cpp_consumer "$(seg r2cpp_after)" 4 1000
    step "C++ producer -> Rust consumer, 2 x 50000 through rings of 64 (many laps)" \
        concurrent cpp_producer "$RC" "$(seg cpp2r)" 2 50000 64
    step "Rust producer -> C++ consumer, 2 x 50000 through rings of 64 (many laps)" \
        concurrent "$RP" cpp_consumer "$(seg r2cpp)" 2 50000 64
    step "C++ producer --batch 16 -> Rust consumer, 2 x 50000, rings of 32" \
        concurrent cpp_producer "$RC" "$(seg cpp2r_batch)" 2 50000 32 --batch 16
    step "Rust producer --batch 16 -> C++ consumer --batch 16 (lambda callback), 2 x 50000, rings of 32" \
        concurrent "$RP" cpp_consumer_batch "$(seg r2cpp_batch)" 2 50000 32 --batch 16
    step "the C++ consumer fails on a missing message (2 x 10 sent, 11 expected)" cpp_detects_missing
fi

# --- make install: pkg-config and CMake against the installed copy -------------------------------
# Installs into a temporary PREFIX, builds examples/hello.c (C11 and C++17; it includes
# <dmxp.h>) in a directory of its own with only the installed include directory, runs it,
# and uninstalls.
INST="$TMP/prefix"
VERSION=$(make -C "$C" -s print-version)
installed() {
    make -C "$C" -s install PREFIX="$INST" || return 1
    local f
    for f in include/dmxp.h lib/pkgconfig/dmxp.pc lib/cmake/dmxp/dmxpConfig.cmake \
        lib/cmake/dmxp/dmxpConfigVersion.cmake; do
        [ -f "$INST/$f" ] || { echo "missing: $INST/$f"; return 1; }
        echo "installed $f"
    done
    cmp "$C/dmxp.h" "$INST/include/dmxp.h"
}
step "make install PREFIX=<tmp>: include/dmxp.h, lib/pkgconfig/dmxp.pc, lib/cmake/dmxp/*" installed

with_pkg_config() ( # a subshell: it changes directory and PKG_CONFIG_PATH
    export PKG_CONFIG_PATH="$INST/lib/pkgconfig"
    local v cflags
    v=$(pkg-config --modversion dmxp) || return 1
    cflags=$(pkg-config --cflags dmxp) || return 1
    cflags=$(echo $cflags) # without the trailing blank
    echo "pkg-config: dmxp $v, --cflags '$cflags', --libs '$(pkg-config --libs dmxp)'"
    [ "$v" = "$VERSION" ] && [ "$cflags" = "-I$INST/include" ] || return 1
    mkdir -p "$TMP/pc" && cp "$C/examples/hello.c" "$TMP/pc/" && cd "$TMP/pc" || return 1
    # shellcheck disable=SC2046
    "${CC:-gcc}" -std=c11 -Wall -Wextra -Werror -Wpedantic hello.c -o hello \
        $(pkg-config --cflags --libs dmxp) || return 1
    ./hello "$(seg hello_pc)" || return 1
    if [ $have_cxx = 1 ]; then
        # shellcheck disable=SC2046
        "$CXX" -std=c++17 -Wall -Wextra -Werror -Wpedantic -x c++ hello.c -x none -o hello_cpp \
            $(pkg-config --cflags --libs dmxp) || return 1
        ./hello_cpp "$(seg hello_pc_cpp)" || return 1
    fi
)
if ensure_tool pkg-config pkg-config; then
    step "pkg-config --cflags --libs dmxp: hello.c against the installed header, C11 and C++17" \
        with_pkg_config
else
    skip "pkg-config is not installed and could not be: the pkg-config build was NOT checked"
fi

with_cmake() {
    local src="$TMP/cm" langs=C
    [ $have_cxx = 1 ] && langs="C CXX"
    mkdir -p "$src" && cp "$C/examples/hello.c" "$src/" && cp "$C/examples/hello.c" "$src/hello.cpp"
    cat >"$src/CMakeLists.txt" <<CMAKE || return 1
cmake_minimum_required(VERSION 3.13)
project(dmxp_install_check LANGUAGES $langs)
find_package(dmxp 99 QUIET) # a version this is not: refused
if(dmxp_FOUND)
  message(FATAL_ERROR "find_package(dmxp 99) accepted dmxp \${dmxp_VERSION}")
endif()
find_package(dmxp 0.1 REQUIRED)
get_target_property(type dmxp::dmxp TYPE)
get_target_property(imported dmxp::dmxp IMPORTED)
if(NOT type STREQUAL "INTERFACE_LIBRARY" OR NOT imported OR NOT dmxp_VERSION STREQUAL "$VERSION")
  message(FATAL_ERROR "dmxp::dmxp: type \${type}, imported \${imported}, version \${dmxp_VERSION}")
endif()
message(STATUS "dmxp \${dmxp_VERSION}: dmxp::dmxp, INTERFACE IMPORTED, include \${dmxp_INCLUDE_DIRS}")
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE dmxp::dmxp)
target_compile_options(hello PRIVATE -Wall -Wextra -Werror -Wpedantic)
set_target_properties(hello PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
if(CMAKE_CXX_COMPILER)
  add_executable(hello_cpp hello.cpp)
  target_link_libraries(hello_cpp PRIVATE dmxp::dmxp)
  target_compile_options(hello_cpp PRIVATE -Wall -Wextra -Werror -Wpedantic)
  set_target_properties(hello_cpp PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
                                             CXX_EXTENSIONS OFF)
endif()
CMAKE
    cmake -S "$src" -B "$TMP/cm-build" -DCMAKE_PREFIX_PATH="$INST" >"$TMP/cmake.log" 2>&1 ||
        { cat "$TMP/cmake.log"; return 1; }
    grep "dmxp $VERSION" "$TMP/cmake.log"
    cmake --build "$TMP/cm-build" -j 2 >"$TMP/cmake-build.log" 2>&1 ||
        { cat "$TMP/cmake-build.log"; return 1; }
    "$TMP/cm-build/hello" "$(seg hello_cmake)" || return 1
    if [ $have_cxx = 1 ]; then "$TMP/cm-build/hello_cpp" "$(seg hello_cmake_cpp)" || return 1; fi
    # Relocatable: the moved tree is found where it now is.
    mv "$INST" "$INST.moved" || return 1
    cmake -S "$src" -B "$TMP/cm-moved" -DCMAKE_PREFIX_PATH="$INST.moved" >"$TMP/cmake2.log" 2>&1
    local rc=$?
    mv "$INST.moved" "$INST"
    [ $rc = 0 ] || { cat "$TMP/cmake2.log"; return 1; }
    grep "include $INST.moved/include" "$TMP/cmake2.log" | sed 's/^/moved: /'
}
if ensure_tool cmake cmake; then
    step "CMake find_package(dmxp) + dmxp::dmxp: hello.c (C11) and hello.cpp (C++17) build and run" \
        with_cmake
else
    skip "cmake is not installed and could not be: the CMake package was NOT checked"
fi

uninstalled() {
    make -C "$C" -s uninstall PREFIX="$INST" || return 1
    local left
    left=$(find "$INST" -type f)
    [ -z "$left" ] || { echo "left after uninstall: $left"; return 1; }
    [ ! -e "$INST/lib/cmake/dmxp" ] && echo "make uninstall: nothing of dmxp left in $INST"
}
step "make uninstall PREFIX=<tmp> removes every installed file" uninstalled

echo
if [ ${#skipped[@]} -ne 0 ]; then
    echo "test-c: skipped (see the !!! lines above): ${skipped[*]}"
fi
if [ ${#failures[@]} -ne 0 ]; then
    echo "test-c: FAILED: ${failures[*]}"
    exit 1
fi
echo "test-c: all checks passed"
