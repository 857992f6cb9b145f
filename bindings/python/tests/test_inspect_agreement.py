"""`python -m dmxp inspect` and the Rust `dmxp inspect` agree: on the same object they print
the same header rows, the same channel table (same columns, in the same order), the same
peers, stuck and validation sections, the same JSON, the same one-line verdict on stderr, and
exit with the same code (0 valid, 1 invalid / not a DMXP segment / cannot be read, 2 usage).

The Rust CLI is built by cargo (the `rust_cli` fixture); DMXP_CLI names a prebuilt one. When
neither works the tests are skipped, saying why.
"""

from __future__ import annotations

import difflib
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dmxp
from dmxp import cli, layout

from .conftest import GOLDEN_BIN, SMALL_SEGMENT, remove_segment, unique_segment_name

PY_PREFIX = "python -m dmxp: "
RUST_PREFIX = "dmxp: "


@pytest.fixture(scope="module")
def dmxp_cli(request: pytest.FixtureRequest) -> str:
    """The Rust `dmxp` binary, or a skip naming why there is none."""
    prebuilt = os.environ.get("DMXP_CLI")
    if prebuilt:
        if not os.access(prebuilt, os.X_OK):
            pytest.skip(f"DMXP_CLI={prebuilt} is not an executable")
        return prebuilt
    try:
        # conftest's session fixture: `cargo build --release -p dmxp-cli --bin dmxp`.
        return str(request.getfixturevalue("rust_cli"))
    except (OSError, RuntimeError, AssertionError, pytest.fail.Exception) as e:
        pytest.skip(f"the Rust dmxp CLI could not be built (cargo build -p dmxp-cli): {e}")


class Run:
    def __init__(self, result: subprocess.CompletedProcess[str], prefix: str) -> None:
        self.code = result.returncode
        self.stdout = result.stdout
        # The one-line messages start with the program's name, which differs. (Usage errors
        # do not: clap's and argparse's texts differ anyway, and only their codes are compared.)
        stderr = result.stderr
        self.stderr = stderr[len(prefix) :] if stderr.startswith(prefix) else stderr


def both(dmxp_cli: str, *args: str, env: dict[str, str] | None = None) -> tuple[Run, Run]:
    rust = subprocess.run(
        [dmxp_cli, "inspect", *args], capture_output=True, text=True, timeout=60, env=env
    )
    python = subprocess.run(
        [sys.executable, "-m", "dmxp", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return Run(rust, RUST_PREFIX), Run(python, PY_PREFIX)


def section(text: str, first: str) -> list[list[str]]:
    """The rows (split on whitespace) of the block of `text` starting at the line that starts
    with `first`, up to the next blank line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(first)), None)
    if start is None:
        return []
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def assert_same(rust: Run, python: Run, what: str) -> None:
    assert python.code == rust.code, f"{what}: exit {python.code}, dmxp says {rust.code}"
    # The parts the issue names, for a readable failure first...
    assert section(python.stdout, "segment") == section(rust.stdout, "segment"), what
    assert section(python.stdout, "channels:") == section(rust.stdout, "channels:"), what
    assert section(python.stdout, "validation:") == section(rust.stdout, "validation:"), what
    # ...then everything, byte for byte.
    if python.stdout != rust.stdout:
        diff = "".join(
            difflib.unified_diff(
                rust.stdout.splitlines(True), python.stdout.splitlines(True), "dmxp", "python"
            )
        )
        pytest.fail(f"{what}: stdout differs:\n{diff}")
    assert python.stderr == rust.stderr, what


def golden_with(patches: list[tuple[int, bytes]]) -> bytes:
    data = bytearray(GOLDEN_BIN.read_bytes())
    for offset, value in patches:
        data[offset : offset + len(value)] = value
    return bytes(data)


E0, E1 = layout.entry_offset(0), layout.entry_offset(1)
CASES = {
    "valid": GOLDEN_BIN.read_bytes(),
    "bad version": golden_with([(8, struct.pack("<I", 9))]),
    "four problems": golden_with(
        [
            (8, struct.pack("<I", 9)),
            (12, struct.pack("<I", 255)),
            (E0 + 24, struct.pack("<I", 9)),
            (E1 + 8, struct.pack("<Q", 6)),
        ]
    ),
    "overlapping bands": golden_with([(E1 + 16, struct.pack("<Q", 98432))]),
    "impossible cursors": golden_with([(E0 + layout.ENTRY_TAIL, struct.pack("<Q", 100))]),
    "peer table on a band": golden_with([(48, struct.pack("<Q", 98432))]),
    "bad peer_records": golden_with([(48, struct.pack("<Q", 1 << 20)), (56, struct.pack("<I", 7))]),
    "stuck position": golden_with([(layout.slot_offset(98432, 1), struct.pack("<Q", 1))]),
    "being created": golden_with([(0, bytes(8))]),
    "shorter than the header": GOLDEN_BIN.read_bytes()[:5000],
    "not a segment (magic)": golden_with([(0, struct.pack("<Q", 7))]),
    "not a segment (10 bytes)": b"0123456789",
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("output", ["text", "json"])
def test_files_agree(dmxp_cli: str, tmp_path: Path, name: str, output: str) -> None:
    path = tmp_path / "segment.bin"
    path.write_bytes(CASES[name])
    extra = ["--json"] if output == "json" else []
    rust, python = both(dmxp_cli, "--file", str(path), *extra)
    assert_same(rust, python, f"{name} ({output})")
    expected = 0 if name in ("valid", "stuck position") else 1
    assert rust.code == expected, f"{name}: dmxp exits {rust.code}"
    if output == "json" and rust.stdout:
        # The same keys in the same order, all the way down.
        assert json.loads(python.stdout) == json.loads(rust.stdout)


@pytest.fixture
def cli_segment(dmxp_cli: str) -> Iterator[str]:
    """A segment made by the Rust CLI: channel 0 of 8 slots in 1 MiB, one message sent."""
    name = unique_segment_name("cli")
    run = [dmxp_cli]
    create = [*run, "create", "--segment", name, "--channel", "0", "--capacity", "8"]
    subprocess.run([*create, "--size", "1M"], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [*run, "send", "--segment", name, "--channel", "0", "hello"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield name
    remove_segment(name)


def test_shm_segment_agrees(dmxp_cli: str, cli_segment: str) -> None:
    runs = [both(dmxp_cli, "--segment", cli_segment, *extra) for extra in ([], ["--json"])]
    for (rust, python), what in zip(runs, ["text", "json"]):
        assert_same(rust, python, f"shm segment ({what})")
        assert rust.code == 0
    rows = section(runs[0][1].stdout, "channels:")
    assert rows[0] == ["channels:", "1"]
    assert rows[1] == list(cli.CHANNEL_COLUMNS)
    assert rows[2][:9] == ["0", "ok", "ready", "8", "960", "-", "0", "1", "1"]
    # DMXP_SEGMENT, with no option, names the same segment for both.
    env = dict(os.environ, DMXP_SEGMENT=cli_segment)
    rust, python = both(dmxp_cli, env=env)
    assert_same(rust, python, "DMXP_SEGMENT")


def test_channel_with_runs_agrees(dmxp_cli: str, segment: str) -> None:
    """A channel Python made for messages longer than one slot, holding one: both tools show
    its limit (the MAX_MSG column, the JSON's flags and max_message_size) and agree on the
    rest."""
    with dmxp.Producer(
        0, capacity=16, segment=segment, size=SMALL_SEGMENT, max_message_size=7680
    ) as producer:
        producer.send(bytes(5000))  # a run of 6 slots
        runs = [both(dmxp_cli, "--segment", segment, *extra) for extra in ([], ["--json"])]
    for (rust, python), what in zip(runs, ["text", "json"]):
        assert_same(rust, python, f"channel with runs ({what})")
        assert rust.code == 0
    rows = section(runs[0][1].stdout, "channels:")
    columns = list(cli.CHANNEL_COLUMNS)
    assert rows[2][columns.index("MAX_MSG")] == "7680"
    assert rows[2][columns.index("DEPTH")] == "6"
    assert rows[2][columns.index("RUNS")] == "1"  # one run queued, of six slots
    channel = json.loads(runs[1][1].stdout)["channels"][0]
    assert (channel["flags"], channel["max_message_size"]) == (layout.CHANNEL_FLAG_RUNS, 7680)


def test_live_peers_and_waiters_agree(dmxp_cli: str, segment: str) -> None:
    """Registered producers and consumers (one blocked receiving): the PEERS column, the
    waiter counts and the peer table agree."""
    with (
        dmxp.Producer(0, capacity=8, segment=segment, size=SMALL_SEGMENT) as p0,
        dmxp.Producer(5, capacity=2, segment=segment, size=SMALL_SEGMENT),
        dmxp.Consumer(5, segment=segment) as c5,
    ):
        for i in range(3):
            p0.send(b"%d" % i)
        got: list[bytes | None] = []
        receiver = threading.Thread(target=lambda: got.append(c5.receive(timeout=30.0)))
        receiver.start()
        try:
            for _ in range(3000):
                if c5.info()["receivers_waiting"] == 1:
                    break
                threading.Event().wait(0.01)
            runs = [both(dmxp_cli, "--segment", segment, *extra) for extra in ([], ["--json"])]
        finally:
            with dmxp.Producer(5, segment=segment) as p5:
                p5.send(b"done")
            receiver.join(30)
        assert got == [b"done"]
    for (rust, python), what in zip(runs, ["text", "json"]):
        assert_same(rust, python, f"live segment ({what})")
    text = runs[0][1].stdout
    assert section(text, "peers:")[0] == ["peers:", "3", "registered,", "0", "dead"] + [
        "(peer",
        "table",
        "at",
        section(text, "peer_table_offset")[0][1] + ")",
    ]
    channel_5 = [row for row in section(text, "channels:")[2:] if row[0] == "5"]
    columns = list(cli.CHANNEL_COLUMNS)
    assert channel_5[0][columns.index("PEERS")] == "1/1"
    assert channel_5[0][columns.index("NOT_EMPTY_WAITERS")] == "1"


def test_missing_segment_and_usage_errors_agree(dmxp_cli: str, tmp_path: Path) -> None:
    missing = unique_segment_name("absent")
    rust, python = both(dmxp_cli, "--segment", missing)
    assert (rust.code, python.code) == (1, 1)
    assert python.stdout == rust.stdout == ""
    assert python.stderr == rust.stderr == f"error: shm segment {missing} does not exist\n"
    rust, python = both(dmxp_cli, "--file", str(tmp_path / "absent.bin"))
    assert (rust.code, python.code) == (1, 1)
    assert python.stderr == rust.stderr
    # Usage errors: both options, or an unknown one (the usage texts differ: clap, argparse).
    for args in (["--segment", "/a", "--file", str(tmp_path / "b")], ["--no-such-option"]):
        rust, python = both(dmxp_cli, *args)
        assert (rust.code, python.code) == (2, 2), args
