"""Typed exceptions: bad magic, bad version, missing segment or channel, too large, and the
rest of the ErrorKind mirror."""

from __future__ import annotations

import builtins
import os
import struct
import threading

import pytest

import dmxp
from dmxp import layout

from .conftest import SMALL_SEGMENT

BAND0 = 98432


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def test_hierarchy() -> None:
    for cls in (
        dmxp.NotFoundError,
        dmxp.FullError,
        dmxp.TooLargeError,
        dmxp.TimeoutError,
        dmxp.CorruptError,
        dmxp.BadMagicError,
        dmxp.UnsupportedVersionError,
        dmxp.InvalidInputError,
        dmxp.ClosedError,
        dmxp.IoError,
    ):
        assert issubclass(cls, dmxp.DmxpError)
    assert issubclass(dmxp.TimeoutError, builtins.TimeoutError)
    assert issubclass(dmxp.BadMagicError, dmxp.CorruptError)
    assert issubclass(dmxp.UnsupportedVersionError, dmxp.CorruptError)
    assert issubclass(dmxp.InvalidInputError, ValueError)
    assert issubclass(dmxp.IoError, OSError)


def test_bad_magic(golden_copy) -> None:
    name = golden_copy({0: u64(0x1122334455667788)})
    for open_it in (lambda: dmxp.Consumer(0, segment=name), lambda: dmxp.Producer(0, segment=name)):
        with pytest.raises(dmxp.BadMagicError) as info:
            open_it()
        assert info.value.field == "magic"
        assert info.value.channel is None
        assert "0x1122334455667788" in str(info.value)
        assert name in str(info.value)


def test_bad_version(golden_copy) -> None:
    name = golden_copy({8: u32(2)})
    with pytest.raises(dmxp.UnsupportedVersionError) as info:
        dmxp.Consumer(0, segment=name)
    assert info.value.field == "version"
    assert "version 2" in str(info.value)


def test_wrong_max_channels_is_corrupt(golden_copy) -> None:
    name = golden_copy({12: u32(128)})
    with pytest.raises(dmxp.CorruptError) as info:
        dmxp.Consumer(0, segment=name)
    assert info.value.field == "max_channels"
    assert not isinstance(info.value, (dmxp.BadMagicError, dmxp.UnsupportedVersionError))


def test_corrupt_channel_entry_names_field_and_channel(golden_copy) -> None:
    # Channel 1's capacity is no power of two.
    name = golden_copy({layout.entry_offset(1) + 8: u64(3)})
    with pytest.raises(dmxp.CorruptError) as info:
        dmxp.Consumer(1, segment=name)
    assert (info.value.field, info.value.channel) == ("capacity", 1)
    # Channel 0 is still fine.
    with dmxp.Consumer(0, segment=name) as consumer:
        assert consumer.receive() == b"DMXP golden segment v1"


def test_band_outside_segment(golden_copy) -> None:
    name = golden_copy({layout.entry_offset(0) + 16: u64(104960 - 1088)})
    with pytest.raises(dmxp.CorruptError) as info:
        dmxp.Consumer(0, segment=name)
    assert (info.value.field, info.value.channel) == ("band_offset", 0)


def test_missing_channel(golden_copy) -> None:
    name = golden_copy()
    with pytest.raises(dmxp.NotFoundError) as info:
        dmxp.Consumer(5, segment=name)
    assert "channel 5" in str(info.value)


def test_missing_segment(segment: str) -> None:
    with pytest.raises(dmxp.NotFoundError) as info:
        dmxp.Consumer(0, segment=segment)
    assert segment in str(info.value)


def test_consumer_wait_finds_a_channel_created_later(segment: str) -> None:
    created = threading.Event()

    def create() -> None:
        # The consumer is already retrying when this runs.
        with dmxp.Producer(2, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:
            producer.send(b"made after the consumer started waiting")
        created.set()

    timer = threading.Timer(0.2, create)
    timer.start()
    try:
        with dmxp.Consumer(2, segment=segment, wait=30.0) as consumer:
            assert consumer.receive(timeout=30.0) == b"made after the consumer started waiting"
    finally:
        timer.join()
    assert created.is_set()


def test_too_large(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:
        with pytest.raises(dmxp.TooLargeError) as info:
            producer.send(bytes(961))
        assert (info.value.length, info.value.limit) == (961, 960)
        # 960 bytes fit exactly.
        assert producer.send(bytes(960)) == 0
        with pytest.raises(dmxp.TooLargeError):
            producer.send_with(bytearray(5000), message_type=1)
        with pytest.raises(dmxp.TooLargeError):
            producer.send_timeout(bytes(961), 1.0)
        # A batch with one oversized payload sends nothing.
        with pytest.raises(dmxp.TooLargeError) as info:
            producer.send_batch([b"ok", bytes(2000), b"ok"])
        assert info.value.length == 2000
        assert producer.info()["tail"] == 1


def test_reserved_flags_and_bad_arguments(segment: str) -> None:
    with pytest.raises(dmxp.InvalidInputError):
        dmxp.Producer(0, capacity=3, segment=segment, size=SMALL_SEGMENT)
    with pytest.raises(dmxp.InvalidInputError):
        dmxp.Producer(0, capacity=1, segment=segment, size=SMALL_SEGMENT)
    with pytest.raises(dmxp.InvalidInputError):
        dmxp.Producer(256, capacity=4, segment=segment, size=SMALL_SEGMENT)
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:
        with pytest.raises(ValueError):  # InvalidInputError is a ValueError
            producer.send_with(b"x", flags=0x0001)
        with pytest.raises(dmxp.InvalidInputError):
            producer.send_with(b"x", flags=0x0080)
        assert producer.send_with(b"x", flags=0xFF00) == 0
        with pytest.raises(dmxp.InvalidInputError):
            producer.send_with(b"x", timeout=float("nan"))


def test_out_of_space(segment: str) -> None:
    # 4 MiB holds about 3,700 slots: a second ring of 4096 does not fit.
    with dmxp.Producer(0, capacity=2048, segment=segment, size=SMALL_SEGMENT):
        with pytest.raises(dmxp.OutOfSpaceError):
            dmxp.Producer(1, capacity=4096, segment=segment, size=SMALL_SEGMENT)


def test_full_and_timeout(segment: str) -> None:
    with dmxp.Producer(0, capacity=2, segment=segment, size=SMALL_SEGMENT) as producer:
        producer.send(b"1")
        producer.send(b"2")
        with pytest.raises(dmxp.FullError):
            producer.send(b"3")
        with pytest.raises(dmxp.FullError):
            producer.send_with(b"3")
        assert producer.send_batch([b"3", b"4"]) == 0
        with pytest.raises(dmxp.TimeoutError) as info:
            producer.send_timeout(b"3", 0.05)
        assert isinstance(info.value, builtins.TimeoutError)
        with pytest.raises(TimeoutError):
            producer.send_with(b"3", timeout=0.01)
        with pytest.raises(dmxp.TimeoutError):
            producer.send_batch([b"3"], timeout=0.01)
        with pytest.raises(dmxp.TimeoutError) as info:
            producer.send_all([b"3", b"4"], timeout=0.01)
        assert "after sending 0 of 2" in str(info.value)


def test_buffer_too_small_consumes_nothing(segment: str) -> None:
    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        producer.send(b"0123456789")
        small = bytearray(4)
        with pytest.raises(dmxp.BufferTooSmallError) as info:
            consumer.receive_into(small)
        assert (info.value.needed, info.value.available) == (10, 4)
        with pytest.raises(dmxp.BufferTooSmallError):
            consumer.receive_into(small, timeout=1.0)
        assert small == bytearray(4)
        exact = bytearray(10)
        assert consumer.receive_into(exact) == 10
        assert exact == b"0123456789"


def test_closed_handles(segment: str) -> None:
    producer = dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    producer.close()
    producer.close()  # idempotent
    consumer.close()
    assert producer.closed and consumer.closed
    with pytest.raises(dmxp.ClosedError):
        producer.send(b"x")
    with pytest.raises(dmxp.ClosedError):
        producer.send_batch([b"x"])
    with pytest.raises(dmxp.ClosedError):
        consumer.receive()
    with pytest.raises(dmxp.ClosedError):
        consumer.receive_into(bytearray(8))
    with pytest.raises(ValueError):  # ClosedError is a ValueError, like a closed file
        consumer.info()
    assert list(consumer) == []


def test_lost_and_corrupt_messages_are_passed_over_and_counted(golden_copy) -> None:
    # Channel 0 holds positions 1 and 2. Make 1 a LOST tombstone... on a second copy, make
    # 1's payload_len impossible. Either way the good message behind it comes out.
    slot1 = BAND0 + 1 * layout.SLOT_SIZE
    lost = golden_copy({slot1 + 38: struct.pack("<H", layout.FLAG_LOST), slot1 + 40: u32(0)})
    with dmxp.Consumer(0, segment=lost) as consumer:
        message = consumer.receive_with_meta()
        assert message is not None and message.message_id == 2
        assert consumer.receive() is None
        assert consumer.stats == {
            "received": 1,
            "lost": 1,
            "revoked": 0,
            "corrupt": 0,
            "dropped_in_batch": 0,
        }

    corrupt = golden_copy({slot1 + 40: u32(5000)})
    with dmxp.Consumer(0, segment=corrupt) as consumer:
        assert consumer.receive_batch(10) == [
            b"The quick brown fox jumps over the lazy dog; 0123456789 ok."
        ]
        assert consumer.stats["dropped_in_batch"] == 1

    corrupt_again = golden_copy({slot1 + 40: u32(961)})
    with dmxp.Consumer(0, segment=corrupt_again) as consumer:
        assert consumer.receive(timeout=1.0) == (
            b"The quick brown fox jumps over the lazy dog; 0123456789 ok."
        )
        assert consumer.stats["corrupt"] == 1

    # A SKIP marker is passed over without being counted.
    skip = golden_copy({slot1 + 38: struct.pack("<H", layout.FLAG_SKIP), slot1 + 40: u32(0)})
    with dmxp.Consumer(0, segment=skip) as consumer:
        assert [m.message_id for m in consumer.receive_batch_with_meta(10)] == [2]
        assert consumer.stats == {
            "received": 1,
            "lost": 0,
            "revoked": 0,
            "corrupt": 0,
            "dropped_in_batch": 0,
        }


def test_not_ready_segment_times_out(golden_copy) -> None:
    # magic 0 and nothing created yet, its creator (this process) alive: "being created"; the
    # attach waits for `timeout`, then says so.
    blank = {offset: b"\0" * 64 for offset in range(0, 98_432, 64)}
    blank[40] = os.getpid().to_bytes(4, "little")
    name = golden_copy(blank)
    with pytest.raises(dmxp.TimeoutError) as info:
        dmxp.Consumer(0, segment=name, timeout=0.1)
    assert f"being created by pid {os.getpid()}" in str(info.value)


def test_zeroed_magic_in_a_live_segment_is_corrupt(golden_copy) -> None:
    # The golden segment holds channels: magic 0 there was overwritten, it is not "being
    # created", and no producer may reformat it.
    name = golden_copy({0: u64(0)})
    for make in (dmxp.Consumer, dmxp.Producer):
        with pytest.raises(dmxp.BadMagicError) as info:
            make(0, segment=name, timeout=0.1)
        assert "overwritten" in str(info.value)
