"""Messages longer than one slot (runs, docs/PROTOCOL.md section 12): channels made for them,
every send and receive path carrying them whole, refusals that consume or send nothing,
batches around them, their bytes on the wire, and threads sharing a channel of them."""

from __future__ import annotations

import array
import math
import mmap
import os
import threading
from collections import Counter

import pytest

import dmxp
from dmxp import layout, pattern

from .conftest import SMALL_SEGMENT

CAPACITY = 256
# Half the ring, the most the Rust facade picks by default: long messages of two laps' worth
# of positions fit one at a time.
LIMIT = CAPACITY // 2 * dmxp.MSG_INLINE  # 122,880
EDGES = [961, 1920, 1921, 65536, LIMIT]


def slots_of(length: int) -> int:
    """Positions a message takes: one, or ceil(length / 960) for a run."""
    return max(1, math.ceil(length / dmxp.MSG_INLINE))


def payload(index: int, length: int) -> bytes:
    return pattern.encode(1, index, length)


@pytest.fixture
def pair(segment: str):
    producer = dmxp.Producer(
        1, capacity=CAPACITY, segment=segment, size=SMALL_SEGMENT, max_message_size=LIMIT
    )
    consumer = dmxp.Consumer(1, segment=segment)
    yield producer, consumer
    producer.close()
    consumer.close()


def test_a_channel_made_for_long_messages(pair, segment: str) -> None:
    producer, consumer = pair
    assert producer.max_message_size == consumer.max_message_size == LIMIT
    assert producer.capacity == consumer.capacity == CAPACITY
    assert producer.info()["max_message_size"] == LIMIT
    # An existing channel keeps its limit, whatever a later producer asks for.
    with dmxp.Producer(1, segment=segment, max_message_size=2000) as other:
        assert other.max_message_size == LIMIT
    with dmxp.Producer(2, capacity=4, segment=segment) as plain:
        assert plain.max_message_size == dmxp.MSG_INLINE
    # No handle is in a claim: no record names a run intent (PROTOCOL.md 12.5).
    records = dmxp.peers(segment)
    assert len(records) >= 2 and {r["intent_flags"] for r in records} == {0}
    assert {r["intent_flags"] for r in layout.read_peers(read_segment(segment))} == {0}
    # Up to one slot: a channel of single-slot messages.
    with dmxp.Producer(3, capacity=4, segment=segment, max_message_size=500) as small:
        assert small.max_message_size == dmxp.MSG_INLINE
    with dmxp.Producer(4, capacity=4, segment=segment, max_message_size=4 * 960) as full:
        assert full.max_message_size == 3840


def test_a_limit_the_ring_cannot_hold_is_refused(segment: str) -> None:
    with pytest.raises(dmxp.InvalidInputError, match="cannot take messages of 3841 bytes"):
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT, max_message_size=3841)
    with pytest.raises(dmxp.InvalidInputError, match="max_message_size -1"):
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT, max_message_size=-1)


def test_round_trips_at_the_edges_over_several_laps(pair) -> None:
    producer, consumer = pair
    position = 0
    # 5 edges (204 positions) x 14 rounds: 2,856 positions, 11 laps of the ring.
    for round_ in range(14):
        for k, length in enumerate(EDGES):
            index = round_ * 10 + k
            sent = payload(index, length)
            assert producer.send(sent) == position
            if k % 2:
                message = consumer.receive_with_meta(timeout=5.0)
                assert message is not None
                assert message.payload == sent and len(message) == length
                assert message.message_id == position
                # The first slot's meta (PROTOCOL.md 12.4): RUN set for a run.
                assert message.flags == (layout.FLAG_RUN if length > 960 else 0)
            else:
                assert consumer.receive() == sent
            position += slots_of(length)
    info = consumer.info()
    assert (info["head"], info["tail"], info["depth"]) == (position, position, 0)
    assert position > 10 * CAPACITY
    assert consumer.stats["received"] == 70
    assert consumer.stats["corrupt"] == consumer.stats["lost"] == 0


def test_every_send_and_receive_form_carries_a_long_message(pair, segment: str) -> None:
    producer, consumer = pair
    long = [payload(i, 3000 + i) for i in range(8)]
    producer.send(long[0])
    assert producer.try_send(long[1]) == 4
    producer.send_with(long[2], message_type=9, flags=0x0100, timeout=5.0)
    producer.send_timeout(long[3], 5.0)
    producer.send_blocking(long[4])
    assert producer.send_all([long[5], b"short", long[6]], timeout=5.0) == 3
    assert consumer.receive(timeout=5.0) == long[0]
    assert consumer.receive_blocking() == long[1]
    message = consumer.receive_with_meta(timeout=-1)
    assert message is not None
    assert (message.payload, message.message_type) == (long[2], 9)
    assert message.flags == 0x0100 | layout.FLAG_RUN
    assert consumer.receive(timeout=math.inf) == long[3]
    got = []
    with dmxp.Consumer(1, segment=segment, idle_timeout=0.2) as iterating:
        got.extend(iterating)
    assert got == [long[4], long[5], b"short", long[6]]


def test_single_and_long_messages_stay_in_order(pair) -> None:
    producer, consumer = pair
    lengths = [24, 961, 100, 960, 5000, 1, 1921, 0, 65536, 959, LIMIT, 30]
    for round_ in range(3):
        for i, length in enumerate(lengths):
            producer.send(bytes([i]) * length)
        received = []
        while len(received) < len(lengths):
            received.extend(consumer.receive_batch(64, timeout=5.0))
        assert [len(p) for p in received] == lengths, round_
        assert received == [bytes([i]) * n for i, n in enumerate(lengths)]


def test_too_large_sends_nothing(pair) -> None:
    producer, consumer = pair
    producer.send(b"before")
    tail = producer.info()["tail"]
    for send in (
        producer.send,
        producer.try_send,
        producer.send_blocking,
        lambda data: producer.send_with(data, timeout=1.0),
        lambda data: producer.send_timeout(data, 1.0),
    ):
        with pytest.raises(dmxp.TooLargeError) as info:
            send(bytes(LIMIT + 1))
        assert (info.value.length, info.value.limit) == (LIMIT + 1, LIMIT)
        assert producer.info()["tail"] == tail
    with pytest.raises(dmxp.TooLargeError) as info:
        producer.send_all([b"a", bytes(2000), bytes(LIMIT + 5)])
    assert (info.value.length, info.value.limit) == (LIMIT + 5, LIMIT)
    # Batches carry single-slot messages: their limit is one slot's, whatever the channel's.
    with pytest.raises(dmxp.TooLargeError) as info:
        producer.send_batch([b"a", bytes(961), b"b"])
    assert (info.value.length, info.value.limit) == (961, 960)
    assert producer.info()["tail"] == tail
    # The limit itself fits.
    producer.send(bytes(LIMIT))
    assert consumer.receive() == b"before"
    assert consumer.receive() == bytes(LIMIT)
    assert consumer.receive() is None


def test_a_channel_of_single_slots_refuses_961_bytes(segment: str) -> None:
    with dmxp.Producer(0, capacity=64, segment=segment, size=SMALL_SEGMENT) as producer:
        with pytest.raises(dmxp.TooLargeError) as info:
            producer.send(bytes(961))
        assert (info.value.length, info.value.limit) == (961, 960)
        assert producer.info()["tail"] == 0


def test_a_run_needs_its_slots_free_at_once(segment: str) -> None:
    with (
        dmxp.Producer(
            0, capacity=8, segment=segment, size=SMALL_SEGMENT, max_message_size=7680
        ) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        for i in range(4):
            producer.send(b"%d" % i)
        # 4 of 8 slots free: a run of 5 does not fit now, and takes nothing.
        with pytest.raises(dmxp.FullError):
            producer.send(bytes(4000))
        assert producer.try_send(bytes(4000)) is None
        assert producer.info()["tail"] == 4
        # A blocked send of it waits for room (GIL released), then goes.
        long = payload(5, 4000)
        sent: list[int] = []
        sender = threading.Thread(target=lambda: sent.append(producer.send_timeout(long, 30.0)))
        sender.start()
        try:
            assert consumer.receive(timeout=5.0) == b"0"
        finally:
            sender.join(30)
        assert sent == [4]
        assert [consumer.receive() for _ in range(3)] == [b"1", b"2", b"3"]
        assert consumer.receive() == long


def test_a_buffer_too_small_consumes_nothing(pair) -> None:
    producer, consumer = pair
    long = payload(3, 2500)
    producer.send(long)
    head = consumer.info()["head"]
    for buffer in (bytearray(1000), bytearray(2499), memoryview(bytearray(3000))[:960]):
        with pytest.raises(dmxp.BufferTooSmallError) as info:
            consumer.receive_into(buffer)
        assert (info.value.needed, info.value.available) == (2500, len(buffer))
        assert bytes(buffer) == bytes(len(buffer))  # not written
        assert consumer.info()["head"] == head
    # Waiting: the same when the message arrives during the wait.
    with pytest.raises(dmxp.BufferTooSmallError):
        consumer.receive_into(bytearray(10), timeout=1.0)
    assert consumer.info()["head"] == head
    buffer = bytearray(2500)
    assert consumer.receive_into(buffer) == 2500
    assert buffer == long
    assert consumer.info()["head"] == head + 3


def test_a_buffer_too_small_while_waiting_consumes_nothing(pair) -> None:
    producer, consumer = pair
    long = payload(4, 5000)
    timer = threading.Timer(0.2, lambda: producer.send(long))
    timer.start()
    try:
        with pytest.raises(dmxp.BufferTooSmallError) as info:
            consumer.receive_into(bytearray(4999), timeout=30.0)
    finally:
        timer.join()
    assert (info.value.needed, info.value.available) == (5000, 4999)
    assert consumer.receive() == long


def test_receive_into_a_bytearray_and_a_memoryview(pair) -> None:
    producer, consumer = pair
    buffer = bytearray(b"." * (LIMIT + 100))
    for i, length in enumerate([961, 5, 1921, LIMIT]):
        sent = payload(i, max(length, 24))
        producer.send(sent)
        assert consumer.receive_into(buffer) == len(sent)
        assert buffer[: len(sent)] == sent
    assert buffer[LIMIT:] == b"." * 100  # only the message's bytes are written
    # Into the middle of a larger buffer through a memoryview, and into an array.
    backing = bytearray(b"#" * 4000)
    producer.send(payload(9, 2000))
    assert consumer.receive_into(memoryview(backing)[1000:3000]) == 2000
    assert backing[1000:3000] == payload(9, 2000)
    assert backing[:1000] == b"#" * 1000 and backing[3000:] == b"#" * 1000
    words = array.array("Q", bytes(8 * 300))
    producer.send(payload(10, 2400))
    assert consumer.receive_into(words) == 2400
    assert words.tobytes()[:2400] == payload(10, 2400)


def test_receive_into_waits_for_a_long_message(pair) -> None:
    producer, consumer = pair
    long = payload(11, 70_000)
    timer = threading.Timer(0.2, lambda: producer.send(long))
    timer.start()
    buffer = bytearray(LIMIT)
    try:
        assert consumer.receive_into(buffer, timeout=30.0) == 70_000
    finally:
        timer.join()
    assert buffer[:70_000] == long


def test_receive_into_a_numpy_array(pair) -> None:
    # scripts/test-python.sh installs numpy into the test environment and sets
    # DMXP_TEST_NUMPY=1: there, a missing numpy fails the test instead of skipping it.
    if os.environ.get("DMXP_TEST_NUMPY"):
        import numpy
    else:
        numpy = pytest.importorskip("numpy")
    producer, consumer = pair
    samples = numpy.arange(20_000, dtype=numpy.float32)  # 80,000 bytes: a run of 84 slots
    producer.send(samples.tobytes())
    out = numpy.zeros(LIMIT // 4, dtype=numpy.float32)
    assert consumer.receive_into(out) == samples.nbytes
    assert numpy.array_equal(out[:20_000], samples)
    assert not out[20_000:].any()
    # A 2-D array is written as its raw bytes; one too small consumes nothing.
    producer.send(payload(12, 1500))
    small = numpy.zeros((10, 10), dtype=numpy.uint8)
    with pytest.raises(dmxp.BufferTooSmallError) as info:
        consumer.receive_into(small)
    assert (info.value.needed, info.value.available) == (1500, 100)
    grid = numpy.zeros((30, 50), dtype=numpy.uint8)
    assert consumer.receive_into(grid) == 1500
    assert grid.tobytes() == payload(12, 1500)


def test_batches_deliver_a_long_message_alone(pair) -> None:
    producer, consumer = pair
    long = payload(13, 3000)
    producer.send_batch([b"a", b"b"])
    producer.send(long)
    producer.send_batch([b"c", b"d"])
    # The batch stops before the run, the run comes alone, then the rest.
    assert consumer.receive_batch(64) == [b"a", b"b"]
    assert consumer.receive_batch(64) == [long]
    assert consumer.receive_batch(64) == [b"c", b"d"]
    assert consumer.receive_batch(64) == []
    # With metadata, and with a wait for the first message (which is the run).
    producer.send(long)
    producer.send(b"e")
    messages = consumer.receive_batch_with_meta(8, timeout=5.0)
    assert [m.payload for m in messages] == [long]
    assert messages[0].message_id == 2 + 4 + 2  # 3,000 bytes take 4 slots
    assert [m.payload for m in consumer.receive_batch_with_meta(8, timeout=5.0)] == [b"e"]
    # A run that arrives while a batch waits comes alone too.
    timer = threading.Timer(0.2, lambda: (producer.send(long), producer.send(b"f")))
    timer.start()
    try:
        assert consumer.receive_batch(8, timeout=30.0) == [long]
    finally:
        timer.join()
    assert consumer.receive_batch(8) == [b"f"]
    # max=1 on a run: the run.
    producer.send(long)
    assert consumer.receive_batch(1) == [long]


def read_segment(segment: str) -> bytes:
    with (
        open(dmxp.shm_path(segment), "rb") as f,
        mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m,
    ):
        return bytes(m)


def test_a_run_on_the_wire(pair, segment: str) -> None:
    """PROTOCOL.md 12.1 and 12.2, as the pure-Python layout reader sees what Python wrote."""
    producer, consumer = pair
    producer.send(b"x")
    long = payload(14, 2 * 960 + 1)  # 3 slots, the last holding one byte
    position = producer.send_with(long, message_type=77)
    assert position == 1
    data = read_segment(segment)
    entry = layout.read_entry(data, 1)
    assert entry is not None
    assert entry["flags"] == layout.CHANNEL_FLAG_RUNS
    assert entry["max_message_size"] == LIMIT == layout.message_limit(entry)
    band = entry["band_offset"]
    slots = [layout.read_slot(data, layout.slot_offset(band, position + i)) for i in range(3)]
    for i, slot in enumerate(slots):
        assert slot is not None
        assert slot["sequence"] == position + i + 1  # published
        assert slot["message_id"] == position
        assert slot["payload_len"] == len(long)
        assert slot["message_type"] == 77
        assert slot["sender_runtime"] == dmxp.RUNTIME_PYTHON
        assert slot["flags"] == (layout.FLAG_RUN if i == 0 else layout.FLAG_RUN_CONT)
        assert (slot["run_slots"], slot["run_index"]) == (3, i)
        assert slot["payload"] == long[960 * i : 960 * (i + 1)]
    # The last word of the last part is zero-padded.
    last = layout.slot_offset(band, position + 2) + layout.PAYLOAD_OFFSET
    assert data[last : last + 8] == long[1920:] + bytes(7)
    message = layout.read_message(data, 1, position)
    assert message is not None and message["payload"] == long
    single = layout.read_message(data, 1, 0)
    assert single is not None and single["payload"] == b"x" and "slots" not in single
    assert consumer.receive() == b"x"
    assert consumer.receive() == long
    # A channel of single slots has neither field.
    with dmxp.Producer(2, capacity=4, segment=segment):
        plain = layout.read_entry(read_segment(segment), 2)
    assert plain is not None
    assert (plain["flags"], plain["max_message_size"]) == (0, 0)
    assert layout.message_limit(plain) == 960


def test_threads_share_a_channel_of_long_messages(pair, segment: str) -> None:
    """2 producer and 2 consumer threads: every message arrives once, whole."""
    producer, _ = pair
    per_producer = 150
    lengths = [24, 960, 961, 4000, 20_000]
    received: list[bytes] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        try:
            with dmxp.Producer(1, segment=segment) as p:
                for i in range(per_producer):
                    index = worker * 1000 + i
                    p.send_timeout(pattern.encode(1, index, lengths[i % 5]), 30.0)
        except BaseException as e:
            errors.append(e)

    produced = threading.Event()

    def consume() -> None:
        try:
            with dmxp.Consumer(1, segment=segment) as c:
                # Until the producers are done and the ring is found empty after that.
                while True:
                    done = produced.is_set()
                    batch = c.receive_batch(16, timeout=0.2)
                    if not batch and done:
                        return
                    with lock:
                        received.extend(batch)
        except BaseException as e:
            errors.append(e)

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(2)]
    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for t in producers + consumers:
        t.start()
    for t in producers:
        t.join(120)
    produced.set()
    for t in consumers:
        t.join(120)
    assert not errors, errors
    indices = Counter()
    for message in received:
        channel, index = pattern.decode(message)
        assert channel == 1
        assert len(message) == lengths[(index % 1000) % 5]
        indices[index] += 1
    expected = {w * 1000 + i for w in range(2) for i in range(per_producer)}
    assert set(indices) == expected
    assert max(indices.values()) == 1
    assert producer.info()["depth"] == 0


def test_a_buffer_sized_to_the_limit_takes_small_messages(pair) -> None:
    """A receive buffer of max_message_size bytes suffices for every message; for a small
    one only its own bytes are written and its length returned."""
    producer, consumer = pair
    buffer = bytearray(LIMIT)
    for i in range(1000):
        producer.send(b"%d" % i)
        assert consumer.receive_into(buffer) == len(b"%d" % i)
    assert buffer[:3] == b"999" and buffer[3:] == bytes(LIMIT - 3)


def test_a_consumer_reads_the_limit_from_the_entry(segment: str) -> None:
    # A consumer opened on a channel made elsewhere reads its limit from the entry.
    with dmxp.Producer(
        6, capacity=32, segment=segment, size=SMALL_SEGMENT, max_message_size=16 * 960
    ) as producer:
        producer.send(payload(1, 16 * 960))
    with dmxp.Consumer(6, segment=segment) as consumer:
        assert consumer.max_message_size == 16 * 960
        message = consumer.receive_with_meta()
        assert message is not None
        assert message.sender_pid == os.getpid()
        assert message.payload == payload(1, 16 * 960)


# --- single_slot_only: the opt-in refusal of a channel of runs (PROTOCOL.md 12.1) -----------


def test_single_slot_only_refuses_a_channel_of_runs(segment: str) -> None:
    with (
        dmxp.Producer(
            5, capacity=8, segment=segment, size=SMALL_SEGMENT, max_message_size=4000
        ) as maker,
        dmxp.Consumer(5, segment=segment) as reader,
    ):
        records = len(dmxp.peers(segment))
        refusals = [
            lambda: dmxp.Consumer(5, segment=segment, single_slot_only=True),
            # An existing channel: the producer opens it as it is, and refuses it.
            lambda: dmxp.Producer(5, capacity=8, segment=segment, single_slot_only=True),
            lambda: dmxp.Producer(
                5, capacity=8, segment=segment, max_message_size=960, single_slot_only=True
            ),
        ]
        for refuse in refusals:
            with pytest.raises(dmxp.RunsNotSupportedError) as refused:
                refuse()
            error = refused.value
            assert error.channel == 5
            assert isinstance(error, dmxp.DmxpError)
            assert not isinstance(error, (dmxp.InvalidInputError, dmxp.CorruptError))
            text = str(error)
            assert "channel 5 carries messages longer than 960 bytes" in text
            assert "4000" in text and segment in text
        # Refused before registering: no peer record was taken (or left behind).
        assert len(dmxp.peers(segment)) == records
        # The default opens the channel, and the channel flows on for the handles it has.
        with dmxp.Consumer(5, segment=segment, single_slot_only=False) as other:
            assert other.max_message_size == 4000
        with dmxp.Consumer(5, segment=segment) as other:
            assert other.max_message_size == 4000
        maker.send(payload(7, 3000))
        assert reader.receive(timeout=1.0) == payload(7, 3000)


def test_single_slot_only_opens_channels_of_single_slots(segment: str) -> None:
    # The producer creates a channel of single slots, and a consumer opens it.
    with (
        dmxp.Producer(
            0, capacity=4, segment=segment, size=SMALL_SEGMENT, single_slot_only=True
        ) as producer,
        dmxp.Consumer(0, segment=segment, single_slot_only=True) as consumer,
    ):
        assert producer.max_message_size == consumer.max_message_size == dmxp.MSG_INLINE
        producer.send(payload(1, dmxp.MSG_INLINE))
        assert consumer.receive(timeout=1.0) == payload(1, dmxp.MSG_INLINE)
        with pytest.raises(dmxp.TooLargeError):
            producer.send(payload(2, dmxp.MSG_INLINE + 1))
    # max_message_size up to 960 is a channel of single slots: accepted.
    for channel, limit in ((1, 0), (2, 500), (3, dmxp.MSG_INLINE)):
        with (
            dmxp.Producer(
                channel, capacity=4, segment=segment, max_message_size=limit, single_slot_only=True
            ) as producer,
            dmxp.Consumer(channel, segment=segment, single_slot_only=True) as c,
        ):
            assert producer.max_message_size == c.max_message_size == dmxp.MSG_INLINE
    # A channel made without single_slot_only, but of single slots, opens too.
    with (
        dmxp.Producer(4, capacity=4, segment=segment),
        dmxp.Consumer(4, segment=segment, single_slot_only=True) as consumer,
    ):
        assert consumer.max_message_size == dmxp.MSG_INLINE


def test_single_slot_only_with_a_longer_limit_is_invalid_input(segment: str) -> None:
    for limit in (961, 4 * 960, 1 << 20):
        with pytest.raises(dmxp.InvalidInputError, match="single_slot_only") as refused:
            dmxp.Producer(
                0,
                capacity=4,
                segment=segment,
                size=SMALL_SEGMENT,
                max_message_size=limit,
                single_slot_only=True,
            )
        assert f"max_message_size={limit}" in str(refused.value)
        # Up front: not even the segment was created.
        assert not os.path.exists(dmxp.shm_path(segment))
    # Even where the channel exists already (and is one of single slots).
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT):
        with pytest.raises(dmxp.InvalidInputError, match="single_slot_only"):
            dmxp.Producer(0, segment=segment, max_message_size=961, single_slot_only=True)


def test_single_slot_only_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        dmxp.Producer(0, 4, "/dmxp_unused", SMALL_SEGMENT, 5.0, True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        dmxp.Consumer(0, "/dmxp_unused", 5.0, 0.0, None, True)  # type: ignore[misc]
    error = dmxp.RunsNotSupportedError("channel 3 ...", channel=3)
    assert error.channel == 3 and str(error) == "channel 3 ..."
    assert dmxp.errors.RunsNotSupportedError is dmxp.RunsNotSupportedError
    assert (
        "RunsNotSupportedError" in dmxp.__all__ and "RunsNotSupportedError" in dmxp.errors.__all__
    )
