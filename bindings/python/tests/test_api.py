"""Producer and Consumer: sends, receives, metadata, buffers, batches, iteration, with."""

from __future__ import annotations

import array
import mmap
import os

import pytest

import dmxp

from .conftest import SMALL_SEGMENT


@pytest.fixture
def pair(segment: str):
    producer = dmxp.Producer(3, capacity=8, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(3, segment=segment)
    yield producer, consumer
    producer.close()
    consumer.close()


def test_send_and_receive(pair) -> None:
    producer, consumer = pair
    assert consumer.receive() is None
    assert [producer.send(b"hello"), producer.send(b""), producer.send(b"!" * 960)] == [0, 1, 2]
    assert consumer.receive() == b"hello"
    assert consumer.receive() == b""
    assert consumer.receive(timeout=5.0) == b"!" * 960
    assert consumer.receive() is None
    assert consumer.stats["received"] == 3


def test_metadata(pair) -> None:
    producer, consumer = pair
    before = dmxp.monotonic_ns()
    assert producer.send_with(b"typed", message_type=0xDEADBEEF, flags=0xAB00) == 0
    after = dmxp.monotonic_ns()
    message = consumer.receive_with_meta()
    assert message is not None
    assert message.payload == b"typed"
    assert bytes(message) == b"typed" and len(message) == 5
    assert message.message_id == 0
    assert message.channel_id == 3
    assert message.message_type == 0xDEADBEEF
    assert message.flags == 0xAB00
    assert message.sender_pid == os.getpid()
    assert message.sender_runtime == dmxp.RUNTIME_PYTHON == 3
    assert before <= message.timestamp_ns <= after
    assert "message_type=3735928559" in repr(message)
    assert consumer.receive_with_meta() is None


@pytest.mark.parametrize("stamped", [True, False])
def test_timestamps(segment: str, stamped: bool) -> None:
    """timestamps=False: every send path writes timestamp_ns = 0 ("unknown"); True (the
    default) stamps CLOCK_MONOTONIC. The setting is the producer's, not the channel's."""
    producer = dmxp.Producer(
        5,
        capacity=8,
        segment=segment,
        size=SMALL_SEGMENT,
        max_message_size=2 * 960,
        timestamps=stamped,
    )
    stamping = dmxp.Producer(5, segment=segment)
    with producer, stamping, dmxp.Consumer(5, segment=segment) as consumer:
        assert producer.timestamps is stamped
        assert stamping.timestamps is True
        sends = [  # (a send, the messages it sends)
            (lambda: producer.send(b"send"), 1),
            (lambda: producer.try_send(b"try_send"), 1),
            (lambda: producer.send_with(b"send_with", message_type=1, timeout=1.0), 1),
            (lambda: producer.send_timeout(b"send_timeout", 1.0), 1),
            (lambda: producer.send_blocking(b"send_blocking"), 1),
            (lambda: producer._try_send(b"_try_send"), 1),  # send_async's
            (lambda: producer.send_batch([b"b1", b"b2"]), 2),
            (lambda: producer.send_all([b"a1", b"r" * 1000]), 2),  # and a run of 2 slots
        ]
        for send, count in sends:
            before = dmxp.monotonic_ns()
            send()
            after = dmxp.monotonic_ns()
            for _ in range(count):
                message = consumer.receive_with_meta()
                assert message is not None
                if stamped:
                    assert before <= message.timestamp_ns <= after, bytes(message)
                else:
                    assert message.timestamp_ns == 0, bytes(message)
            assert consumer.receive_with_meta() is None
        before = dmxp.monotonic_ns()
        stamping.send(b"other producer")
        message = consumer.receive_with_meta()
        assert message is not None
        assert message.timestamp_ns != 0 and message.timestamp_ns >= before


def test_bytes_like_payloads(pair) -> None:
    producer, consumer = pair
    producer.send(bytearray(b"from a bytearray"))
    producer.send(memoryview(b"__from a memoryview__")[2:-2])
    producer.send(array.array("I", [1, 2]))  # raw bytes of any item format
    assert producer.send_batch([b"a", bytearray(b"b"), memoryview(b"c")]) == 3
    assert consumer.receive() == b"from a bytearray"
    assert consumer.receive() == b"from a memoryview"
    assert consumer.receive() == array.array("I", [1, 2]).tobytes()
    assert consumer.receive_batch() == [b"a", b"b", b"c"]
    with pytest.raises(BufferError):
        producer.send(memoryview(b"abcdef")[::2])  # not contiguous
    with pytest.raises(TypeError):
        producer.send("text is not bytes")  # type: ignore[arg-type]


def test_receive_into_writes_in_place(pair) -> None:
    producer, consumer = pair
    buffer = bytearray(b"." * 16)
    assert consumer.receive_into(buffer) is None
    producer.send(b"abc")
    assert consumer.receive_into(buffer) == 3
    assert buffer == b"abc" + b"." * 13
    # Into the middle of a larger buffer through a memoryview, and into an array.
    producer.send(b"XY")
    assert consumer.receive_into(memoryview(buffer)[5:10]) == 2
    assert buffer[5:7] == b"XY"
    words = array.array("Q", [0, 0])
    producer.send(b"\x01" + bytes(7) + b"\x02")
    assert consumer.receive_into(words, timeout=1.0) == 9
    assert words.tolist() == [1, 2]
    with pytest.raises(BufferError):
        consumer.receive_into(b"read-only bytes")


def test_buffers_beyond_bytes_and_bytearray(pair) -> None:
    """The abi3 extension reads and writes other buffers through a memoryview (the buffer
    protocol is not in Python 3.9's limited API): mmap, multi-dimensional views, and only the
    payload's bytes are written."""
    producer, consumer = pair
    with mmap.mmap(-1, 16) as region:
        region[:5] = b"mmap!"
        producer.send(memoryview(region)[:5])
        producer.send_batch([region[:2], memoryview(region)[2:4]])
        assert consumer.receive() == b"mmap!"
        assert consumer.receive_batch() == [b"mm", b"ap"]
        producer.send(b"into mmap")
        assert consumer.receive_into(region) == 9
        assert region[:10] == b"into mmap\x00"
    grid = bytearray(b"." * 12)
    view = memoryview(grid).cast("B", (3, 4))  # 2-D, C-contiguous
    producer.send(b"abcdef")
    assert consumer.receive_into(view) == 6
    assert grid == b"abcdef......"
    # Writes go through private memory: a batch keeps what it was given even if the
    # bytearray changes afterwards.
    source = bytearray(b"before")
    assert producer.send_batch([source]) == 1
    source[:] = b"after!"
    assert consumer.receive() == b"before"
    with pytest.raises(BufferError):
        consumer.receive_into(memoryview(bytearray(8))[::2])  # not contiguous


def test_receive_into_waits_without_touching_the_buffer_early(pair) -> None:
    producer, consumer = pair
    buffer = bytearray(8)
    assert consumer.receive_into(buffer, timeout=0.01) is None
    assert buffer == bytearray(8)


def test_batches(pair) -> None:
    producer, consumer = pair
    assert producer.send_batch([]) == 0
    assert producer.send_batch(b"%d" % i for i in range(5)) == 5  # any iterable
    assert producer.send_batch([b"x"] * 10) == 3  # room for 3 of 10
    assert consumer.receive_batch(0) == []
    assert consumer.receive_batch(2) == [b"0", b"1"]
    messages = consumer.receive_batch_with_meta(100)
    assert [(m.message_id, m.payload) for m in messages] == [
        (2, b"2"),
        (3, b"3"),
        (4, b"4"),
        (5, b"x"),
        (6, b"x"),
        (7, b"x"),
    ]
    assert consumer.receive_batch(10, timeout=0.01) == []
    assert consumer.stats["received"] == 8


def test_send_all_waits_for_room(pair, segment: str) -> None:
    import threading

    producer, consumer = pair
    payloads = [b"m%03d" % i for i in range(100)]  # 100 messages through a ring of 8
    got: list[bytes] = []

    def drain() -> None:
        while len(got) < len(payloads):
            got.extend(consumer.receive_batch(5, timeout=10.0))

    thread = threading.Thread(target=drain)
    thread.start()
    assert producer.send_all(payloads, timeout=30.0) == 100
    thread.join()
    assert got == payloads


def test_iteration_stops_after_idle_timeout(segment: str) -> None:
    with (
        dmxp.Producer(0, capacity=16, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment, idle_timeout=0.05) as consumer,
    ):
        for i in range(10):
            producer.send(b"%d" % i)
        assert [int(payload) for payload in consumer] == list(range(10))
        # Iterating again after more sends picks up where it left off.
        producer.send(b"10")
        assert list(consumer) == [b"10"]
        assert iter(consumer) is consumer


def test_context_managers_close(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:
        assert not producer.closed
        producer.send(b"x")
    assert producer.closed
    with pytest.raises(dmxp.ClosedError):
        producer.send(b"y")
    # __exit__ does not swallow exceptions.
    with pytest.raises(KeyError):
        with dmxp.Consumer(0, segment=segment) as consumer:
            raise KeyError("boom")
    assert consumer.closed
    # The segment outlives the handles: a new consumer finds the message.
    with dmxp.Consumer(0, segment=segment) as consumer:
        assert consumer.receive() == b"x"


def test_properties_and_info(pair, segment: str) -> None:
    producer, consumer = pair
    assert producer.channel_id == consumer.channel_id == 3
    assert producer.capacity == consumer.capacity == 8
    assert producer.max_message_size == consumer.max_message_size == dmxp.MSG_INLINE
    assert segment in producer.segment and segment in consumer.segment
    producer.send(b"1")
    producer.send(b"2")
    consumer.receive()
    info = consumer.info()
    assert info == {
        "id": 3,
        "capacity": 8,
        "max_message_size": 960,
        "band_offset": info["band_offset"],
        "head": 1,
        "tail": 2,
        "depth": 1,
        "receivers_waiting": 0,
        "senders_waiting": 0,
    }
    assert info["band_offset"] >= dmxp.HEADER_SIZE and info["band_offset"] % 64 == 0
    assert "channel_id=3" in repr(producer) and "closed" not in repr(consumer)


def test_existing_channel_keeps_its_capacity(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT):
        with dmxp.Producer(0, capacity=64, segment=segment) as again:
            assert again.capacity == 4


def test_no_wake_syscall_while_nobody_waits(pair) -> None:
    producer, consumer = pair
    before = dmxp.futex_wake_calls()
    for _ in range(1000):
        producer.send(b"x")
        assert consumer.receive() == b"x"
    producer.send_batch([b"y"] * 8)
    assert len(consumer.receive_batch(8)) == 8
    assert dmxp.futex_wake_calls() == before


def mapped(segment: str) -> bool:
    with open("/proc/self/maps") as maps:
        return dmxp.shm_path(segment) in maps.read()


def test_close_releases_the_mapping(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:
        assert mapped(segment)
        with dmxp.Consumer(0, segment=segment):
            pass
        assert mapped(segment)  # the producer still has it
    assert producer.closed
    assert not mapped(segment)
    consumer = dmxp.Consumer(0, segment=segment)
    assert mapped(segment)
    consumer.close()
    assert not mapped(segment)
