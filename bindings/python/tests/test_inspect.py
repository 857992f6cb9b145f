"""python -m dmxp inspect: header, channels, waiters, and the validator's verdict."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading

import pytest

import dmxp
from dmxp import layout

from .conftest import GOLDEN_BIN, SMALL_SEGMENT


def inspect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmxp", "inspect", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_golden_file_json() -> None:
    result = inspect("--file", str(GOLDEN_BIN), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["error"] is None
    assert report["header"]["magic"] == layout.MAGIC
    assert report["header"]["creator_pid"] == 4242
    assert report["segment_len"] == 104960
    assert [
        (c["id"], c["capacity"], c["head"], c["tail"], c["depth"], c["band_offset"], c["state"])
        for c in report["channels"]
    ] == [(0, 4, 1, 3, 2, 98432, 2), (1, 2, 0, 2, 2, 102784, 2)]
    assert all(c["receivers_waiting"] == 0 == c["senders_waiting"] for c in report["channels"])


def test_golden_file_text() -> None:
    result = inspect("--file", str(GOLDEN_BIN))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "magic 0x444d58505f4d454d" in lines[1]
    assert "channels: 2 created" in result.stdout
    rows = [
        line.split() for line in lines if line.startswith("    0 ") or line.startswith("    1 ")
    ]
    assert rows == [
        ["0", "4", "1", "3", "2", "0", "0", "98432", "READY"],
        ["1", "2", "0", "2", "2", "0", "0", "102784", "READY"],
    ]
    assert lines[-1] == "valid: yes"


@pytest.mark.parametrize(
    "offset, value, field, channel, kind",
    [
        (0, struct.pack("<Q", 7), "magic", None, "BadMagicError"),
        (8, struct.pack("<I", 9), "version", None, "UnsupportedVersionError"),
        (16, struct.pack("<I", 300), "channel_count", None, "CorruptError"),
        (32, struct.pack("<Q", 100), "band_cursor", None, "CorruptError"),
        (layout.entry_offset(1) + 8, struct.pack("<Q", 6), "capacity", 1, "CorruptError"),
        (layout.entry_offset(1) + 0, struct.pack("<I", 4), "channel_id", 1, "CorruptError"),
        (layout.entry_offset(0) + 24, struct.pack("<I", 9), "state", 0, "CorruptError"),
        (layout.entry_offset(1) + 16, struct.pack("<Q", 98432), "band_offset", 1, "CorruptError"),
    ],
)
def test_corruption_is_named(tmp_path, offset, value, field, channel, kind) -> None:
    data = bytearray(GOLDEN_BIN.read_bytes())
    data[offset : offset + len(value)] = value
    path = tmp_path / "bad.bin"
    path.write_bytes(data)

    result = inspect("--file", str(path), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["error"]["field"] == field
    assert report["error"]["channel"] == channel
    assert report["error"]["kind"] == kind

    text = inspect("--file", str(path))
    assert text.returncode == 1
    expected = f"field {field}" + (f" of channel {channel}" if channel is not None else "")
    assert f"valid: NO ({expected})" in text.stdout


def test_segment_being_created_and_short_files(tmp_path) -> None:
    data = bytearray(GOLDEN_BIN.read_bytes())
    data[0:8] = bytes(8)
    (tmp_path / "zero.bin").write_bytes(data)
    result = inspect("--file", str(tmp_path / "zero.bin"), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["kind"] == "NotReadyError"

    (tmp_path / "short.bin").write_bytes(GOLDEN_BIN.read_bytes()[:5000])
    result = inspect("--file", str(tmp_path / "short.bin"))
    assert result.returncode == 1
    assert "too small" in result.stdout


def test_missing_segment_exits_2(segment: str) -> None:
    result = inspect("--segment", segment)
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_live_segment_shows_depth_and_waiters(segment: str) -> None:
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
    assert channels[5]["receivers_waiting"] == 1
    assert channels[5]["creator_pid"] == report["header"]["creator_pid"]
    assert report["header"]["segment_size"] == SMALL_SEGMENT
