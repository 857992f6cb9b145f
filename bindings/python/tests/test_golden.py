"""The golden segment from the Rust core (dmxp-nostd/tests/golden/segment_v1.bin).

Decoded field by field in pure Python (``dmxp.layout``, plain ``struct``), every row of
segment_v1.md checked; then attached through the extension from a copy in /dev/shm, where the
queued messages must come out with the documented metadata and the rings must be exactly as
full as documented.
"""

from __future__ import annotations

import re
import struct

import pytest

import dmxp
from dmxp import layout

from .conftest import GOLDEN_MD

GOLDEN_LEN = 104960
BAND0 = 98432
BAND1 = 102784
CREATOR = 4242


def test_header_fields(golden_bytes: bytes) -> None:
    assert len(golden_bytes) == GOLDEN_LEN
    assert golden_bytes[:8] == b"MEM_PXMD"  # the magic's bytes in memory
    assert layout.read_header(golden_bytes) == {
        "magic": 0x444D58505F4D454D,
        "version": 1,
        "max_channels": 256,
        "channel_count": 2,
        "reserved": 0,
        "segment_size": GOLDEN_LEN,
        "band_cursor": GOLDEN_LEN,
        "creator_pid": CREATOR,
        "header_flags": 0,
        "peer_table_offset": 0,
        "peer_records": 0,
    }
    assert golden_bytes[48:128] == bytes(80)


def test_channel_entries(golden_bytes: bytes) -> None:
    common = {
        "flags": 0,  # no RUNS: single-slot channels, whose max_message_size is 0
        "max_message_size": 0,
        "state": layout.STATE_READY,
        "creator_pid": CREATOR,
        "not_empty_seq": 0,
        "not_empty_waiters": 0,
        "not_full_seq": 0,
        "not_full_waiters": 0,
    }
    assert layout.read_entry(golden_bytes, 0) == {
        **common,
        "channel_id": 0,
        "capacity": 4,
        "band_offset": BAND0,
        "tail": 3,
        "head": 1,
    }
    assert layout.read_entry(golden_bytes, 1) == {
        **common,
        "channel_id": 1,
        "capacity": 2,
        "band_offset": BAND1,
        "tail": 2,
        "head": 0,
    }
    # Absolute offsets of the cursors, as the description gives them.
    assert struct.unpack_from("<Q", golden_bytes, 256)[0] == 3
    assert struct.unpack_from("<Q", golden_bytes, 384)[0] == 1
    assert struct.unpack_from("<Q", golden_bytes, 640)[0] == 2
    assert struct.unpack_from("<Q", golden_bytes, 768)[0] == 0
    for channel in range(2, 256):
        start = layout.entry_offset(channel)
        assert golden_bytes[start : start + layout.CHANNEL_ENTRY_SIZE] == bytes(384), channel
    # Everything of entries 0 and 1 that is not a named field is zero.
    for channel in (0, 1):
        start = layout.entry_offset(channel)
        entry = golden_bytes[start : start + layout.CHANNEL_ENTRY_SIZE]
        assert entry[48:128] == bytes(80)
        assert entry[136:256] == bytes(120)
        assert entry[264:384] == bytes(120)


def slot(golden_bytes: bytes, band: int, index: int) -> dict[str, object]:
    decoded = layout.read_slot(golden_bytes, layout.slot_offset(band, index))
    assert decoded is not None
    return decoded


def meta(
    sequence: int,
    message_id: int,
    channel_id: int,
    message_type: int,
    flags: int,
    timestamp_ns: int,
    payload: bytes,
) -> dict[str, object]:
    return {
        "sequence": sequence,
        "message_id": message_id,
        "timestamp_ns": timestamp_ns,
        "channel_id": channel_id,
        "message_type": message_type,
        "sender_pid": CREATOR,
        "sender_runtime": 1,
        "flags": flags,
        "payload_len": len(payload),
        "padding": 0,
        "run_slots": 0,
        "run_index": 0,
        "payload": payload,
    }


FOX = b"The quick brown fox jumps over the lazy dog; 0123456789 ok."


def test_slots(golden_bytes: bytes) -> None:
    # Channel 0: slot 0 consumed and freed (sequence 0 + capacity), 1 and 2 published.
    assert slot(golden_bytes, BAND0, 0) == meta(4, 0, 0, 1, 0, 1000000000, b"first message")
    assert slot(golden_bytes, BAND0, 1) == meta(
        2, 1, 0, 2, 0x0100, 1000000001, b"DMXP golden segment v1"
    )
    assert slot(golden_bytes, BAND0, 2) == meta(3, 2, 0, 3, 0, 1000000002, FOX)
    start = layout.slot_offset(BAND0, 3)
    assert struct.unpack_from("<Q", golden_bytes, start)[0] == 3
    assert golden_bytes[start + 8 : start + layout.SLOT_SIZE] == bytes(layout.SLOT_SIZE - 8)
    # Channel 1: both slots published, the ring is full.
    assert slot(golden_bytes, BAND1, 0) == meta(1, 0, 1, 7, 0x0100, 1000000003, b"")
    assert slot(golden_bytes, BAND1, 1) == meta(2, 1, 1, 8, 0x0300, 1000000004, b"ninebytes")
    # Bytes of the payload area past payload_len are zero (zero-padded words, zeroed slots).
    for band, index in [(BAND0, 0), (BAND0, 1), (BAND0, 2), (BAND1, 0), (BAND1, 1)]:
        decoded = slot(golden_bytes, band, index)
        start = layout.slot_offset(band, index) + layout.PAYLOAD_OFFSET
        length = len(decoded["payload"])  # type: ignore[arg-type]
        assert golden_bytes[start + length : start + layout.MSG_INLINE] == bytes(
            layout.MSG_INLINE - length
        )


def _md_rows() -> list[tuple[int, int, str, str]]:
    """Every ``| offset | size | field | value |`` row of the description."""
    rows = []
    for line in GOLDEN_MD.read_text().splitlines():
        match = re.fullmatch(r"\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\w+)\s*\|\s*([^|]*?)\s*\|", line)
        if match:
            offset, size, field, value = match.groups()
            rows.append((int(offset), int(size), field, value))
    return rows


def _expected(value: str) -> int | bytes:
    if value.startswith('"'):
        return value[1:-1].encode("ascii")
    return int(value, 0)


def _decode_row(data: bytes, offset: int, field: str) -> object:
    """The value our decoders give for the field the row names at this offset."""
    if offset < layout.CHANNEL_TABLE_OFFSET:
        return layout.read_header(data)[field]  # type: ignore[index]
    if offset < layout.HEADER_SIZE:
        channel = (offset - layout.CHANNEL_TABLE_OFFSET) // layout.CHANNEL_ENTRY_SIZE
        return layout.read_entry(data, channel)[field]  # type: ignore[index]
    for channel in range(layout.MAX_CHANNELS):
        entry = layout.read_entry(data, channel)
        assert entry is not None
        band, capacity = entry["band_offset"], entry["capacity"]
        if capacity and band <= offset < band + capacity * layout.SLOT_SIZE:
            index = (offset - band) // layout.SLOT_SIZE
            return layout.read_slot(data, layout.slot_offset(band, index))[field]  # type: ignore[index]
    raise AssertionError(f"offset {offset} lies in no band")


def test_every_row_of_the_description(golden_bytes: bytes) -> None:
    rows = _md_rows()
    # 10 header rows, 12 per entry, 11 per used slot and the one row of the unused slot.
    assert len(rows) == 10 + 2 * 12 + 5 * 11 + 1, len(rows)
    for offset, size, field, value in rows:
        expected = _expected(value)
        decoded = _decode_row(golden_bytes, offset, field)
        assert decoded == expected, (offset, field)
        # And the raw bytes at the stated offset agree with the stated size.
        raw = golden_bytes[offset : offset + size]
        if isinstance(expected, bytes):
            assert raw == expected, (offset, field)
        else:
            assert int.from_bytes(raw, "little") == expected, (offset, field)


def test_rust_validator_accepts_the_golden_bytes(golden_bytes: bytes) -> None:
    parsed = dmxp.parse_segment(golden_bytes)
    assert parsed["header"]["channel_count"] == 2
    assert parsed["segment_len"] == GOLDEN_LEN
    assert parsed["channels"] == [
        {"id": 0, "capacity": 4, "band_offset": BAND0, "head": 1, "tail": 3, "depth": 2},
        {"id": 1, "capacity": 2, "band_offset": BAND1, "head": 0, "tail": 2, "depth": 2},
    ]


def received(message: dmxp.Message | None) -> tuple[object, ...]:
    assert message is not None
    return (
        message.message_id,
        message.channel_id,
        message.message_type,
        message.flags,
        message.timestamp_ns,
        message.sender_pid,
        message.sender_runtime,
        message.payload,
    )


def test_attach_receive_and_send_on_a_copy(golden_copy) -> None:
    name = golden_copy()
    with dmxp.Consumer(0, segment=name) as c0, dmxp.Consumer(1, segment=name) as c1:
        assert c0.capacity == 4 and c1.capacity == 2
        info = c0.info()
        assert (info["head"], info["tail"], info["depth"]) == (1, 3, 2)
        assert received(c0.receive_with_meta()) == (
            1,
            0,
            2,
            0x0100,
            1000000001,
            CREATOR,
            1,
            b"DMXP golden segment v1",
        )
        assert received(c0.receive_with_meta()) == (2, 0, 3, 0, 1000000002, CREATOR, 1, FOX)
        assert c0.receive() is None

        with dmxp.Producer(1, segment=name) as p1:
            # Channel 1 is full until something is received.
            with pytest.raises(dmxp.FullError):
                p1.send(b"no room")
            assert received(c1.receive_with_meta()) == (
                0,
                1,
                7,
                0x0100,
                1000000003,
                CREATOR,
                1,
                b"",
            )
            assert received(c1.receive_with_meta()) == (
                1,
                1,
                8,
                0x0300,
                1000000004,
                CREATOR,
                1,
                b"ninebytes",
            )
            assert c1.receive() is None
            assert [p1.send(b"a"), p1.send(b"b")] == [2, 3]
            with pytest.raises(dmxp.FullError):
                p1.send(b"c")

        with dmxp.Producer(0, segment=name) as p0:
            # Exactly 4 sends fit after the two receives; ids continue from tail 3.
            assert [p0.send(b"x%d" % i) for i in range(4)] == [3, 4, 5, 6]
            assert p0.try_send(b"one too many") is None
        got = c0.receive_batch_with_meta(10)
        assert [(m.message_id, m.payload, m.sender_runtime) for m in got] == [
            (3, b"x0", dmxp.RUNTIME_PYTHON),
            (4, b"x1", dmxp.RUNTIME_PYTHON),
            (5, b"x2", dmxp.RUNTIME_PYTHON),
            (6, b"x3", dmxp.RUNTIME_PYTHON),
        ]
        assert c1.receive_batch(10) == [b"a", b"b"]

    # What Python wrote still validates with the Rust core.
    with open(dmxp.shm_path(name), "rb") as f:
        parsed = dmxp.parse_segment(f.read())
    assert [(c["id"], c["head"], c["tail"]) for c in parsed["channels"]] == [(0, 7, 7), (1, 4, 4)]
