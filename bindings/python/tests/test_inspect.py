"""python -m dmxp inspect: header, channels, peers, waiters, and every problem the checks find.

The report has the schema of the Rust `dmxp inspect --json` (docs/CLI.md); that both tools
print the same is test_inspect_agreement.py's business.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading

import pytest

import dmxp
from dmxp import cli, layout

from .conftest import GOLDEN_BIN, SMALL_SEGMENT

MAGIC_HEX = "0x444d58505f4d454d"


def inspect(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmxp", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_golden_file_json() -> None:
    result = inspect("--file", str(GOLDEN_BIN), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["problems"] == []
    assert report["is_dmxp_segment"] is True
    assert report["source"] == {"kind": "file", "name": str(GOLDEN_BIN)}
    assert report["header"]["magic"] == MAGIC_HEX
    assert report["header"]["creator_pid"] == 4242
    assert report["segment_len"] == 104960
    assert [
        (c["id"], c["status"], c["capacity"], c["head"], c["tail"], c["depth"], c["band_offset"])
        for c in report["channels"]
    ] == [(0, "ok", 4, 1, 3, 2, 98432), (1, "ok", 2, 0, 2, 2, 102784)]
    assert all(c["state"] == "ready" for c in report["channels"])
    assert all(c["not_empty_waiters"] == 0 == c["not_full_waiters"] for c in report["channels"])
    # No peer table in the golden segment: no records, every count 0.
    assert report["peer_table"] == "none" and report["peers"] == []
    no_peers = {"producers": 0, "consumers": 0, "dead": 0}
    assert all(c["peers"] == no_peers for c in report["channels"])
    assert report["stuck"] == []


def test_golden_file_text() -> None:
    result = inspect("--file", str(GOLDEN_BIN))
    assert result.returncode == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["segment", "file", "segment", str(GOLDEN_BIN)]
    assert lines[2].split() == ["magic", MAGIC_HEX, "(DMXP_MEM)"]
    header = lines.index("channels: 2") + 1
    assert lines[header].split() == list(cli.CHANNEL_COLUMNS)
    assert [line.split() for line in lines[header + 1 : header + 3]] == [
        ["0", "ok", "ready", "4", "960", "-", "1", "3", "2", "0/0", "0", "0", "4242", "98432"],
        ["1", "ok", "ready", "2", "960", "-", "0", "2", "2", "0/0", "0", "0", "4242", "102784"],
    ]
    assert "peers: none (no peer table yet)" in lines
    assert lines[-1] == "validation: ok"


@pytest.mark.parametrize(
    "offset, value, field, channel",
    [
        (8, struct.pack("<I", 9), "version", None),
        (16, struct.pack("<I", 300), "channel_count", None),
        (32, struct.pack("<Q", 100), "band_cursor", None),
        (layout.entry_offset(1) + 8, struct.pack("<Q", 6), "capacity", 1),
        (layout.entry_offset(1) + 0, struct.pack("<I", 4), "channel_id", 1),
        (layout.entry_offset(0) + 24, struct.pack("<I", 9), "state", 0),
        (layout.entry_offset(1) + 16, struct.pack("<Q", 98432), "band_offset", 1),
        (layout.entry_offset(0) + layout.ENTRY_TAIL, struct.pack("<Q", 100), "tail", 0),
    ],
)
def test_corruption_is_named(tmp_path, offset, value, field, channel) -> None:
    data = bytearray(GOLDEN_BIN.read_bytes())
    data[offset : offset + len(value)] = value
    path = tmp_path / "bad.bin"
    path.write_bytes(data)

    result = inspect("--file", str(path), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["is_dmxp_segment"] is True
    assert [(p["field"], p["channel"]) for p in report["problems"]] == [(field, channel)]
    if channel is not None:
        (row,) = [c for c in report["channels"] if c["id"] == channel]
        assert row["status"] == "corrupt" and row["depth"] is None

    text = inspect("--file", str(path))
    assert text.returncode == 1
    assert "validation: FAILED, 1 problem" in text.stdout
    lines = text.stdout.splitlines()
    assert lines[-2].split() == list(cli.PROBLEM_COLUMNS)
    assert lines[-1].split()[:2] == [field, "-" if channel is None else str(channel)]
    assert text.stderr == (
        f"python -m dmxp: file segment {path} is invalid: 1 problem (fields: {field})\n"
    )


def test_every_problem_is_listed(tmp_path) -> None:
    """The core stops at the first problem; inspect patches it away and looks again."""
    data = bytearray(GOLDEN_BIN.read_bytes())
    for offset, value in [
        (8, struct.pack("<I", 9)),  # version
        (12, struct.pack("<I", 255)),  # max_channels
        (layout.entry_offset(0) + 24, struct.pack("<I", 9)),  # state of channel 0
        (layout.entry_offset(1) + 8, struct.pack("<Q", 6)),  # capacity of channel 1
    ]:
        data[offset : offset + len(value)] = value
    report = cli.inspect_bytes(bytes(data), "multi.bin")
    assert [(p["field"], p["channel"]) for p in report["problems"]] == [
        ("version", None),
        ("max_channels", None),
        ("state", 0),
        ("capacity", 1),
    ]
    # The golden segment has no peer table: "none" whatever else is wrong.
    assert report["peer_table"] == "none"


def test_not_a_segment(tmp_path) -> None:
    """A wrong magic (or an object too short for the header) is no DMXP segment: one line on
    stderr, nothing else checked, exit 1; the JSON report still on stdout."""
    data = bytearray(GOLDEN_BIN.read_bytes())
    data[0:8] = struct.pack("<Q", 7)
    (tmp_path / "other.bin").write_bytes(data)
    result = inspect("--file", str(tmp_path / "other.bin"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(
        f"python -m dmxp: file {tmp_path / 'other.bin'} is not a DMXP segment: bad magic "
    )
    report = json.loads(inspect("--file", str(tmp_path / "other.bin"), "--json").stdout)
    assert report["is_dmxp_segment"] is False
    assert [p["field"] for p in report["problems"]] == ["magic"]
    assert report["channels"] == []

    (tmp_path / "tiny.bin").write_bytes(b"0123456789")
    result = inspect("--file", str(tmp_path / "tiny.bin"))
    assert result.returncode == 1 and "is not a DMXP segment" in result.stderr
    assert "10 bytes is too short" in result.stderr


def test_segment_being_created_and_short_files(tmp_path) -> None:
    data = bytearray(GOLDEN_BIN.read_bytes())
    data[0:8] = bytes(8)
    (tmp_path / "zero.bin").write_bytes(data)
    result = inspect("--file", str(tmp_path / "zero.bin"), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["is_dmxp_segment"] is True
    assert [p["field"] for p in report["problems"]] == ["magic"]
    assert "still being created" in report["problems"][0]["message"]

    (tmp_path / "short.bin").write_bytes(GOLDEN_BIN.read_bytes()[:5000])
    result = inspect("--file", str(tmp_path / "short.bin"))
    assert result.returncode == 1
    assert "validation: FAILED" in result.stdout
    assert "smaller than the 98432-byte header" in result.stdout


def test_missing_segment_exits_1(segment: str, tmp_path) -> None:
    result = inspect("--segment", segment)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"python -m dmxp: error: shm segment {segment} does not exist\n"
    result = inspect("--file", str(tmp_path / "absent.bin"))
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_usage_errors_exit_2(tmp_path) -> None:
    assert inspect("--segment", "/a", "--file", str(tmp_path / "b")).returncode == 2
    assert inspect("--no-such-option").returncode == 2


def test_segment_names(golden_copy) -> None:
    """`--segment` with or without its `/`; DMXP_SEGMENT when neither option is given."""
    name = golden_copy()
    for given in (name, name.lstrip("/")):
        result = inspect("--segment", given, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["source"] == {"kind": "shm", "name": name}
    env = {"DMXP_SEGMENT": name, "PATH": "/usr/bin:/bin"}
    result = inspect("--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"]["name"] == name


def test_stuck_position_is_reported() -> None:
    """Channel 0 of the golden segment (capacity 4, head 1, tail 3) with the slot at head
    claimed and not published (its sequence word still equal to the position)."""
    data = bytearray(GOLDEN_BIN.read_bytes())
    slot = layout.slot_offset(98432, 1)
    data[slot : slot + 8] = struct.pack("<Q", 1)
    report = cli.inspect_bytes(bytes(data))
    assert report["valid"] is True
    assert report["stuck"] == [
        {"channel": 0, "side": "receive", "position": 1, "holders": [], "for_ms": None}
    ]
    text = cli.human(cli.Source("file", "x"), report)
    assert (
        "stuck: channel 0 position 1: claimed by a producer, not published: receives wait; "
        "held by no registered holder; not yet noted by a waiting peer"
    ) in text


def test_live_segment_shows_depth_peers_and_waiters(segment: str) -> None:
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
            deadline = 3000
            while c5.info()["receivers_waiting"] != 1 and deadline:
                threading.Event().wait(0.01)
                deadline -= 1
            result = inspect("--segment", segment, "--json")
        finally:
            p5 = dmxp.Producer(5, segment=segment)
            p5.send(b"done")
            receiver.join(30)
            p5.close()
        assert got == [b"done"]
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    channels = {c["id"]: c for c in report["channels"]}
    assert sorted(channels) == [0, 5]
    assert (channels[0]["tail"], channels[0]["depth"], channels[0]["capacity"]) == (3, 3, 8)
    assert channels[5]["not_empty_waiters"] == 1
    assert channels[5]["creator_pid"] == report["header"]["creator_pid"]
    assert report["header"]["segment_size"] == SMALL_SEGMENT
    assert report["peer_table"] == "ok"
    assert channels[0]["peers"] == {"producers": 1, "consumers": 0, "dead": 0}
    assert channels[5]["peers"] == {"producers": 1, "consumers": 1, "dead": 0}
    consumer = [p for p in report["peers"] if p["role"] == "consumer"]
    assert [(p["channel"], p["runtime_name"], p["alive"], p["waiting"]) for p in consumer] == [
        (5, "python", True, "message")
    ]


def test_table_matches_the_cli_layout() -> None:
    """Columns two spaces apart after the widest cell; the last column unpadded."""
    assert cli.table([["a", "bb", "c"], ["ccc", "d", "eeee"]]) == "a    bb  c\nccc  d   eeee\n"
