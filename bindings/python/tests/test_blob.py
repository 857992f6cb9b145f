"""Blobs (docs/PROTOCOL.md section 13): loans written in place and committed, messages read
in place and released, the pool's exhaustion and reclaim, and the views' lifetime."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

import dmxp
from dmxp import _dmxp, pattern

from .conftest import python_example

# Hang guards only.
LONG = 30.0

# Four 4 KiB blocks, two of 1 MiB, two of 4 MiB: about 10 MiB of blocks.
CLASSES = [(4096, 4), (1 << 20, 2), (4 << 20, 2)]
SIZE = 16 << 20


def numpy_module():
    # scripts/test-python.sh installs numpy and sets DMXP_TEST_NUMPY=1: there a missing numpy
    # fails the test instead of skipping it.
    if os.environ.get("DMXP_TEST_NUMPY"):
        import numpy

        return numpy
    return pytest.importorskip("numpy")


def free(handle: dmxp.Producer | dmxp.Consumer) -> list[int]:
    return [c["free"] for c in handle.blob_stats()]


def state(handle: dmxp.Producer | dmxp.Consumer, name: str) -> int:
    return sum(c[name] for c in handle.blob_stats())


@pytest.fixture
def pair(segment: str) -> Iterator[tuple[dmxp.Producer, dmxp.Consumer]]:
    producer = dmxp.Producer(0, capacity=16, segment=segment, size=SIZE, blob_classes=CLASSES)
    consumer = dmxp.Consumer(0, segment=segment)
    yield producer, consumer
    producer.close()
    consumer.close()


# ------------------------------------------------------------------ the pool


def test_a_producer_creates_the_pool_it_is_given(pair) -> None:
    producer, consumer = pair
    stats = producer.blob_stats()
    assert [(c["block_size"], c["block_count"]) for c in stats] == CLASSES
    assert all(c["free"] == c["block_count"] for c in stats)
    assert all(c["loaned"] == c["queued"] == c["held"] == c["invalid"] == 0 for c in stats)
    assert consumer.blob_stats() == stats
    assert producer.max_blob_size == consumer.max_blob_size == 4 << 20


def test_blob_pool_bytes_are_split_over_classes(segment: str) -> None:
    with dmxp.Producer(0, capacity=8, segment=segment, size=SIZE, blob_pool=8 << 20) as p:
        stats = p.blob_stats()
        assert stats[0]["block_size"] == 4096
        assert sum(c["block_size"] * c["block_count"] for c in stats) <= 8 << 20
        assert p.max_blob_size == stats[-1]["block_size"]


@pytest.mark.parametrize(
    "classes",
    [[(100, 1)], [(4096, 0)], [(8192, 1), (4096, 1)], [], [("big", 1)], [(4096,)]],
)
def test_bad_blob_classes_are_refused(segment: str, classes) -> None:
    with pytest.raises(dmxp.InvalidInputError, match="blob_classes"):
        dmxp.Producer(0, segment=segment, size=SIZE, blob_classes=classes)


def test_blob_pool_and_blob_classes_are_exclusive(segment: str) -> None:
    with pytest.raises(dmxp.InvalidInputError, match="not both"):
        dmxp.Producer(0, segment=segment, size=SIZE, blob_pool=1 << 20, blob_classes=CLASSES)


def test_a_channel_without_blobs_refuses_loans(segment: str) -> None:
    with dmxp.Producer(0, capacity=8, segment=segment, size=4 << 20) as producer:
        assert producer.max_blob_size == 0
        assert producer.blob_stats() == []
        assert producer.reclaim_blobs() == 0
        with pytest.raises(dmxp.NoBlobPoolError):
            producer.loan(10)
        with dmxp.Consumer(0, segment=segment) as consumer:
            assert consumer.receive_view() is None
            producer.send(b"plain")
            with consumer.receive_view() as message:
                assert not message.in_place
                assert bytes(message.view) == b"plain"


def test_a_blob_channel_needs_a_segment_with_a_pool(segment: str) -> None:
    with dmxp.Producer(0, capacity=8, segment=segment, size=4 << 20):
        with pytest.raises(dmxp.NoBlobPoolError):
            dmxp.Producer(1, capacity=8, segment=segment, size=4 << 20, blob_pool=1 << 20)


def test_a_loan_larger_than_every_block_is_too_large(pair) -> None:
    producer, _ = pair
    with pytest.raises(dmxp.TooLargeError) as raised:
        producer.loan(producer.max_blob_size + 1)
    assert raised.value.length == producer.max_blob_size + 1
    assert raised.value.limit == producer.max_blob_size


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("nbytes", [1, 4096, 1 << 20, 4 << 20])
def test_round_trip_in_place(pair, nbytes: int) -> None:
    producer, consumer = pair
    start = free(producer)
    data = os.urandom(nbytes)
    with producer.loan(nbytes) as loan:
        view = loan.view
        assert len(loan) == loan.nbytes == view.nbytes == nbytes
        assert view.format == "B" and not view.readonly
        view[:] = data
        assert state(producer, "loaned") == 1
    assert loan.closed and loan.message_id is not None
    assert state(producer, "queued") == 1
    with consumer.receive_view(timeout=LONG) as message:
        assert message.in_place and message.view.readonly
        assert len(message) == message.nbytes == message.view.nbytes == nbytes
        assert message.view == data
        assert bytes(message) == data
        assert message.message_id == loan.message_id
        assert message.flags & 0x0010  # BLOB
        assert message.sender_runtime == dmxp.RUNTIME_PYTHON
        assert message.sender_pid == os.getpid()
        assert message.channel_id == 0
        assert message.meta["payload_len"] == nbytes
        assert message.meta["message_id"] == message.message_id
        assert state(consumer, "held") == 1
    assert message.released
    assert free(producer) == start


def test_commit_sends_a_prefix_with_type_and_flags(pair) -> None:
    producer, consumer = pair
    loan = producer.loan(4096)
    loan.view[:100] = b"x" * 100
    message_id = loan.commit(100, message_type=7, flags=0x0100)
    assert loan.message_id == message_id
    with consumer.receive_view() as message:
        assert message.view == b"x" * 100
        assert message.message_type == 7
        assert message.flags == 0x0110
        assert message.message_id == message_id


def test_a_refused_commit_leaves_the_loan_open(pair) -> None:
    producer, consumer = pair
    loan = producer.loan(100)
    loan.view[:] = bytes(range(100))
    with pytest.raises(dmxp.TooLargeError):
        loan.commit(101)
    with pytest.raises(dmxp.InvalidInputError):
        loan.commit(flags=0x0001)
    assert not loan.closed
    loan.commit()
    with pytest.raises(dmxp.ClosedError, match="committed"):
        loan.commit()
    loan.abandon()  # nothing to do
    with consumer.receive_view() as message:
        assert message.view == bytes(range(100))


def test_a_full_ring_keeps_the_loan_until_there_is_room(segment: str) -> None:
    producer = dmxp.Producer(0, capacity=2, segment=segment, size=SIZE, blob_classes=CLASSES)
    consumer = dmxp.Consumer(0, segment=segment)
    with producer, consumer:
        for _ in range(2):
            producer.send(b"filler")
        loan = producer.loan(64)
        loan.view[:] = b"b" * 64
        with pytest.raises(dmxp.FullError):
            loan.commit(timeout=0)
        started = time.monotonic()
        with pytest.raises(dmxp.TimeoutError):
            loan.commit(timeout=0.1)
        assert time.monotonic() - started >= 0.1
        assert not loan.closed
        # A commit waiting for a slot (GIL released) gets the one freed meanwhile.
        timer = threading.Timer(0.1, consumer.receive)
        timer.start()
        loan.commit(timeout=LONG)
        timer.join()
        assert consumer.receive() == b"filler"
        with consumer.receive_view() as message:
            assert message.view == b"b" * 64


def test_several_messages_can_be_held_at_once(pair) -> None:
    producer, consumer = pair
    for k in range(3):
        with producer.loan(4096) as loan:
            loan.view[:] = bytes([k]) * 4096
    messages = [consumer.receive_view() for _ in range(3)]
    assert state(consumer, "held") == 3
    for k, message in enumerate(messages):
        assert message.view == bytes([k]) * 4096
    for message in reversed(messages):
        message.release()
    assert state(consumer, "held") == 0


def test_an_inline_message_arrives_through_receive_view(pair) -> None:
    producer, consumer = pair
    message_id = producer.send_with(b"hello", message_type=5, flags=0x0200)
    message = consumer.receive_view()
    assert message is not None
    assert not message.in_place
    assert message.view == b"hello" and message.view.readonly
    assert (message.message_id, message.message_type, message.flags) == (message_id, 5, 0x0200)
    assert message.sender_runtime == dmxp.RUNTIME_PYTHON
    message.release()
    with pytest.raises(ValueError):
        message.view[0]
    assert consumer.receive_view() is None


def test_copying_receives_take_blobs_and_free_their_blocks(pair) -> None:
    producer, consumer = pair
    start = free(producer)
    data = os.urandom(1 << 20)
    for _ in range(2):
        with producer.loan(len(data)) as loan:
            loan.view[:] = data
    assert consumer.receive() == data
    message = consumer.receive_with_meta()
    assert message.payload == data and message.flags & 0x0010
    assert free(producer) == start
    for _ in range(2):
        with producer.loan(len(data)) as loan:
            loan.view[:] = data
    # A buffer too small leaves the blob in the ring.
    with pytest.raises(dmxp.BufferTooSmallError) as raised:
        consumer.receive_into(bytearray(100))
    assert raised.value.needed == len(data)
    buffer = bytearray(len(data))
    assert consumer.receive_into(buffer) == len(data) and buffer == data
    assert consumer.receive_batch() == [data]
    assert free(producer) == start


def test_threads_loan_and_commit_at_once(pair) -> None:
    producer, consumer = pair
    threads, per_thread = 4, 25
    errors: list[BaseException] = []

    def send(channel: int) -> None:
        try:
            for index in range(per_thread):
                payload = pattern.encode(channel, index, 3000 + index)
                with producer.loan(len(payload), timeout=LONG) as loan:
                    loan.view[:] = payload
        except BaseException as e:
            errors.append(e)

    senders = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for sender in senders:
        sender.start()
    seen = set()
    deadline = time.monotonic() + LONG
    while len(seen) < threads * per_thread and time.monotonic() < deadline:
        message = consumer.receive_view(timeout=1.0)
        if message is None:
            continue
        with message:
            channel, index = pattern.decode(message.view)
            assert len(message) == 3000 + index
            seen.add((channel, index))
    for sender in senders:
        sender.join(LONG)
    assert not errors
    assert len(seen) == threads * per_thread
    assert state(producer, "free") == sum(count for _, count in CLASSES)


# ------------------------------------------------------------------ context managers, views


def test_a_loan_abandoned_by_an_exception_sends_nothing(pair) -> None:
    producer, consumer = pair
    start = free(producer)
    with pytest.raises(RuntimeError):
        with producer.loan(4096) as loan:
            loan.view[:4] = b"lost"
            raise RuntimeError("while filling")
    assert loan.closed and loan.message_id is None
    assert free(producer) == start
    assert consumer.receive_view() is None
    with pytest.raises(ValueError):
        loan.view[0]
    with pytest.raises(dmxp.ClosedError, match="abandoned"):
        loan.commit()


def test_a_message_is_released_on_leaving_its_block_even_by_an_exception(pair) -> None:
    producer, consumer = pair
    with producer.loan(10) as loan:
        loan.view[:] = b"0123456789"
    with pytest.raises(RuntimeError):
        with consumer.receive_view() as message:
            assert state(consumer, "held") == 1
            raise RuntimeError("while reading")
    assert message.released
    assert state(consumer, "held") == 0


def test_views_used_after_their_end_raise(pair) -> None:
    producer, consumer = pair
    loan = producer.loan(4096)
    view = loan.view
    view[0] = 1
    loan.commit()
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        view[0] = 2
    with pytest.raises(ValueError):
        bytes(loan.view)

    abandoned = producer.loan(4096)
    abandoned.abandon()
    with pytest.raises(ValueError):
        abandoned.view[0] = 1

    message = consumer.receive_view()
    view = message.view
    assert view[0] == 1
    message.release()
    message.release()  # idempotent
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        bytes(message)


def test_collected_loans_and_messages_give_their_blocks_back(pair) -> None:
    producer, consumer = pair
    start = free(producer)
    view = producer.loan(4096).view  # the loan itself is collected at once
    gc.collect()
    assert free(producer) == start
    with pytest.raises(ValueError):
        view[0]
    with producer.loan(4096) as loan:
        loan.view[:] = b"k" * 4096
    view = consumer.receive_view().view
    gc.collect()
    assert free(producer) == start
    with pytest.raises(ValueError):
        view[0]


def test_numpy_wraps_the_views_without_a_copy(pair) -> None:
    numpy = numpy_module()
    producer, consumer = pair
    count = (1 << 20) // 4
    with producer.loan(count * 4) as loan:
        samples = numpy.frombuffer(loan.view, dtype=numpy.uint32)
        assert samples.flags.writeable
        samples[:] = numpy.arange(count, dtype=numpy.uint32)
        # The array's writes are the view's: the same memory, in the block.
        assert loan.view[4:8] == (1).to_bytes(4, "little")
        del samples
    with consumer.receive_view() as message:
        received = numpy.frombuffer(message.view, dtype=numpy.uint32)
        assert not received.flags.writeable
        assert numpy.array_equal(received, numpy.arange(count, dtype=numpy.uint32))
        del received


def test_what_is_made_from_a_view_keeps_the_segment_mapped(segment: str) -> None:
    numpy_module()
    # In a child: were it wrong, touching the memory would crash the process.
    script = textwrap.dedent(
        """
        import gc, sys, numpy, dmxp
        segment = sys.argv[1]
        def mapped():
            with open("/proc/self/maps") as f:
                return any(segment.lstrip("/") in line for line in f)
        producer = dmxp.Producer(0, capacity=8, segment=segment, size=16 << 20,
                                 blob_classes=[(4096, 2)])
        loan = producer.loan(4096)
        array = numpy.frombuffer(loan.view, dtype=numpy.uint8)
        piece = loan.view[10:20]
        loan.commit()
        producer.close()
        del producer, loan
        gc.collect()
        array[0] = 1
        print(mapped(), array[0], piece[0] == 0)
        del array
        gc.collect()
        print(mapped(), piece[0] == 0)
        del piece
        gc.collect()
        print(mapped())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, segment],
        capture_output=True,
        text=True,
        timeout=LONG,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["True 1 True", "True True", "False"]


# ------------------------------------------------------------------ exhaustion, waits


def test_exhaustion_raises_and_a_release_frees_a_block(pair) -> None:
    producer, consumer = pair
    big = 4 << 20  # only the two 4 MiB blocks fit
    loans = [producer.loan(big), producer.loan(big)]
    with pytest.raises(dmxp.PoolExhaustedError) as raised:
        producer.loan(big)
    assert raised.value.length == big
    started = time.monotonic()
    with pytest.raises(dmxp.TimeoutError):
        producer.loan(big, timeout=0.1)
    assert time.monotonic() - started >= 0.1
    # Smaller loans still get smaller blocks.
    producer.loan(4096).abandon()

    loans[0].commit()
    message = consumer.receive_view()
    assert message is not None and message.in_place
    with pytest.raises(dmxp.PoolExhaustedError):
        producer.loan(big)  # the block is the consumer's now
    message.release()
    third = producer.loan(big)
    loans[1].abandon()
    third.abandon()
    assert state(producer, "free") == sum(count for _, count in CLASSES)


def test_a_waiting_loan_gets_the_block_a_consumer_releases(pair) -> None:
    producer, consumer = pair
    big = 4 << 20
    first, second = producer.loan(big), producer.loan(big)
    first.commit()
    message = consumer.receive_view()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(producer.loan(big, timeout=LONG)))
    waiter.start()
    time.sleep(0.1)  # the waiter sleeps with the GIL released
    assert not got
    message.release()
    waiter.join(LONG)
    assert len(got) == 1 and isinstance(got[0], dmxp.BlobLoan)
    got[0].abandon()
    second.abandon()


def test_receive_view_waits_for_a_message_without_the_gil(pair) -> None:
    producer, consumer = pair
    assert consumer.receive_view() is None
    started = time.monotonic()
    assert consumer.receive_view(timeout=0.1) is None
    assert time.monotonic() - started >= 0.1
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(consumer.receive_view(timeout=LONG)))
    waiter.start()
    time.sleep(0.1)
    with producer.loan(64) as loan:
        loan.view[:] = b"w" * 64
    waiter.join(LONG)
    [message] = got
    assert isinstance(message, dmxp.BlobMessage)
    with message:
        assert message.view == b"w" * 64


def test_closed_handles_refuse_new_loans_and_receives(pair) -> None:
    producer, consumer = pair
    loan = producer.loan(64)
    producer.close()
    with pytest.raises(dmxp.ClosedError):
        producer.loan(64)
    with pytest.raises(dmxp.ClosedError):
        loan.commit()
    loan.abandon()
    consumer.close()
    with pytest.raises(dmxp.ClosedError):
        consumer.receive_view()


# ------------------------------------------------------------------ crashes

CHILD = """
import sys, time, dmxp
role, segment, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "producer":
    producer = dmxp.Producer(0, segment=segment)
    loan = producer.loan(nbytes)
    loan.view[:5] = b"dying"
else:
    consumer = dmxp.Consumer(0, segment=segment)
    message = consumer.receive_view(timeout=30)
    assert message is not None and message.in_place
print("holding", flush=True)
time.sleep(600)
"""


def start_holding(role: str, segment: str, nbytes: int) -> subprocess.Popen:
    """A child that loans (producer) or receives (consumer) a block and holds it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, role, segment, str(nbytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != "holding":
        kill(child)
        pytest.fail(f"the {role} child did not get its block: {line!r}")
    return child


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    # Reaped: a zombie still looks alive to the liveness check.
    assert child.wait(LONG) == -signal.SIGKILL
    if child.stdout is not None:
        child.stdout.close()


def hold_then_die(role: str, segment: str, nbytes: int) -> None:
    """Runs a child that holds a block, and kills it with SIGKILL while it does."""
    kill(start_holding(role, segment, nbytes))


def test_the_loan_of_a_killed_producer_is_reclaimed(pair, segment: str) -> None:
    producer, consumer = pair
    start = free(producer)
    hold_then_die("producer", segment, 1 << 20)
    assert state(producer, "loaned") == 1
    assert free(producer) != start
    assert producer.reclaim_blobs() == 1
    assert free(producer) == start
    assert consumer.receive_view() is None  # nothing was sent


def test_the_block_a_killed_consumer_held_is_reclaimed(pair, segment: str) -> None:
    producer, consumer = pair
    start = free(producer)
    with producer.loan(1 << 20) as loan:
        loan.view[:4] = b"held"
    hold_then_die("consumer", segment, 0)
    assert state(consumer, "held") == 1
    assert consumer.reclaim_blobs() == 1
    assert free(consumer) == start


def test_an_exhausted_loan_reclaims_a_dead_peer_s_blocks_by_itself(pair, segment: str) -> None:
    producer, _ = pair
    big = 4 << 20
    # Both hold their block before either dies (a peer that registers frees the blocks of
    # dead ones).
    children = [start_holding("producer", segment, big) for _ in range(2)]
    for child in children:
        kill(child)
    assert state(producer, "loaned") == 2
    producer.loan(big).abandon()  # exhausted: one reclaim pass, then loaned


# ------------------------------------------------------------------ the examples' --blob run


def test_blob_lengths_match_the_rust_pattern() -> None:
    for index in range(10):
        assert pattern.blob_len(index) == _dmxp.rust_pattern_blob_len(index)
    assert pattern.BLOB_CLASSES == ((64 << 10, 32), (1 << 20, 8), (4 << 20, 6))


def test_the_examples_pass_blobs(segment: str) -> None:
    count = 12
    consumer = subprocess.Popen(
        [*python_example("consumer"), "1", str(count), "--blob", "--segment", segment],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    producer = subprocess.run(
        [*python_example("producer"), "1", str(count), "16", "--blob", "--segment", segment]
        + ["--size", str(64 << 20), "--full-wait", str(LONG)],
        capture_output=True,
        text=True,
        timeout=2 * LONG,
    )
    out, err = consumer.communicate(timeout=2 * LONG)
    assert producer.returncode == 0, producer.stderr
    assert consumer.returncode == 0, err
    assert f"received {count} messages" in out
    assert "lost 0, duplicated 0, corrupt 0" in out
