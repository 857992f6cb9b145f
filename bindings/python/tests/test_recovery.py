"""Crash recovery (PROTOCOL.md section 11): Python handles register in the peer table, and a
Python consumer or producer repairs a channel held up by a dead peer.

A process cannot be stopped between its claim and its publish from Python (the Rust test hooks
are not built into the extension). So each case starts a real Python child that opens a
producer or consumer (a real record, with its pid and start time), kills it with SIGKILL, and
then writes into the segment what that child would have left had it died mid-call: the intent
in its record, and the cursor moved past the claimed position (section 11.4).
"""

from __future__ import annotations

import gc
import mmap
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import dmxp
from dmxp import layout, pattern

from .conftest import SMALL_SEGMENT

# Hang guards only: a working build finishes each wait within a few STUCK_GRACE periods.
LONG = 30.0

CHILD = """
import sys, time, dmxp
role, segment = sys.argv[1], sys.argv[2]
if role == "producer":
    handle = dmxp.Producer(0, segment=segment)
else:
    handle = dmxp.Consumer(0, segment=segment)
print("registered" if handle.is_registered else "unregistered", flush=True)
if len(sys.argv) > 3:  # block in a wait (the parent has filled the ring for a producer)
    if role == "producer":
        handle.send_timeout(b"blocked", 600)
    else:
        handle.receive_with_meta(timeout=600)
time.sleep(600)
"""


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (counted after the command name's closing parenthesis)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return int(text[text.rindex(")") + 2 :].split()[19])


@contextmanager
def mapped(segment: str) -> Iterator[mmap.mmap]:
    """The live segment, mapped shared: writes are seen by every handle at once."""
    with open(dmxp.shm_path(segment), "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        yield mm


def u64_at(mm: mmap.mmap, offset: int) -> int:
    return struct.unpack_from("<Q", mm, offset)[0]


def tail_offset(channel: int = 0) -> int:
    return layout.entry_offset(channel) + layout.ENTRY_TAIL


def head_offset(channel: int = 0) -> int:
    return layout.entry_offset(channel) + layout.ENTRY_HEAD


def sequence(mm: mmap.mmap, position: int, channel: int = 0) -> int:
    entry = layout.read_entry(mm, channel)
    assert entry is not None
    index = position & (entry["capacity"] - 1)
    return u64_at(mm, layout.slot_offset(entry["band_offset"], index))


def record_offset(mm: mmap.mmap, index: int) -> int:
    header = layout.read_header(mm)
    assert header is not None and header["peer_table_offset"] != 0
    return layout.peer_record_offset(header["peer_table_offset"], index)


def write_intent(mm: mmap.mmap, index: int, position: int, count: int = 1) -> None:
    """The intent of record ``index`` (section 11.2: position at 24, count at 20)."""
    offset = record_offset(mm, index)
    struct.pack_into("<Q", mm, offset + 24, position)
    struct.pack_into("<I", mm, offset + 20, count)


def write_record(mm: mmap.mmap, index: int, **fields: int) -> None:
    """A whole record: pid, runtime, role, start_time, channel_id, intent_count,
    intent_position, pid_ns, waiting, intent_flags (missing fields 0)."""
    values = [fields.get(name, 0) for name in layout.PEER_FIELDS]
    struct.pack_into("<IHHQIIQQII", mm, record_offset(mm, index), *values)


def records_of(segment: str, pid: int) -> list[dict]:
    return [r for r in dmxp.peers(segment) if r["pid"] == pid]


class Child:
    """A Python process holding a registered producer or consumer of channel 0."""

    def __init__(self, role: str, segment: str, *, wait: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, role, segment] + (["wait"] if wait else []),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "registered"
        self.pid = self.process.pid
        [self.record] = records_of(segment, self.pid)
        assert self.record["role"] == role
        assert self.record["start_time"] == start_time(self.pid)
        assert self.record["alive"]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(LONG) == -signal.SIGKILL

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children started by a test; killed afterwards if still alive."""
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


def forge_producer_claim(segment: str, record: int) -> int:
    """What a producer killed between its claim and its publish leaves: its intent naming the
    position at ``tail``, and ``tail`` moved past it. Returns the position."""
    with mapped(segment) as mm:
        position = u64_at(mm, tail_offset())
        assert sequence(mm, position) == position  # free for this claim
        write_intent(mm, record, position)
        struct.pack_into("<Q", mm, tail_offset(), position + 1)
    return position


def forge_consumer_claim(segment: str, record: int) -> int:
    """What a consumer killed between its claim and its free leaves: its intent naming the
    position at ``head`` (a published message), and ``head`` moved past it."""
    with mapped(segment) as mm:
        position = u64_at(mm, head_offset())
        assert sequence(mm, position) == position + 1  # published
        write_intent(mm, record, position)
        struct.pack_into("<Q", mm, head_offset(), position + 1)
    return position


def payload(index: int) -> bytes:
    return pattern.encode(0, index, pattern.default_len(index))


# ------------------------------------------------------------------ registration


def test_a_segment_made_with_more_peer_records_registers_more_handles(segment: str) -> None:
    first = dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT, peer_records=1024)
    handles = [first] + [dmxp.Producer(0, segment=segment) for _ in range(299)]
    assert all(h.is_registered for h in handles)
    with mapped(segment) as mm:
        header = layout.read_header(mm)
        assert header is not None and header["peer_records"] == 1024
        raw = layout.read_peers(mm)
    assert len(raw) == 300
    assert max(r["index"] for r in raw) >= 256
    assert len(dmxp.peers(segment)) == 300
    handles[-1].send(b"from the 300th handle")
    assert dmxp.Consumer(0, segment=segment).receive() == b"from the 300th handle"


@pytest.mark.parametrize("records", [100, 16385])
def test_a_peer_table_size_no_segment_may_have_is_refused(segment: str, records: int) -> None:
    with pytest.raises(dmxp.InvalidInputError, match="peer table of"):
        dmxp.Producer(0, segment=segment, size=SMALL_SEGMENT, peer_records=records)
    with pytest.raises(dmxp.NotFoundError):
        dmxp.Consumer(0, segment=segment)


def test_handles_register_while_open_and_leave_on_close(segment: str) -> None:
    me, my_start = os.getpid(), start_time(os.getpid())
    producer = dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT)
    assert producer.is_registered
    fields = ("pid", "runtime", "role", "start_time", "channel_id", "intent_count")
    assert [tuple(r[f] for f in fields) for r in dmxp.peers(segment)] == [
        (me, dmxp.RUNTIME_PYTHON, "producer", my_start, 0, 0)
    ]
    consumer = dmxp.Consumer(0, segment=segment)
    assert consumer.is_registered
    records = dmxp.peers(segment)
    assert sorted(r["role"] for r in records) == ["consumer", "producer"]
    assert all(r["pid"] == me and r["alive"] for r in records)
    # The same records, read from the bytes as the protocol lays them out.
    with mapped(segment) as mm:
        raw = layout.read_peers(mm)
    assert [(r["pid"], r["runtime"], r["start_time"]) for r in raw] == [
        (me, 3, my_start),
        (me, 3, my_start),
    ]
    assert sorted(r["role"] for r in raw) == [layout.ROLE_PRODUCER, layout.ROLE_CONSUMER]

    # Sends and receives clear their intents when done.
    producer.send(b"one")
    producer.send_batch([b"two", b"three"])
    assert consumer.receive() == b"one"
    assert consumer.receive_batch(8) == [b"two", b"three"]
    assert [r["intent_count"] for r in dmxp.peers(segment)] == [0, 0]

    producer.close()
    assert [r["role"] for r in dmxp.peers(segment)] == ["consumer"]
    consumer.close()
    assert dmxp.peers(segment) == []

    # A handle collected without close leaves too.
    dmxp.Consumer(0, segment=segment)
    gc.collect()
    assert dmxp.peers(segment) == []


def test_threads_sharing_a_handle_each_use_their_own_record(segment: str) -> None:
    threads, per_thread = 4, 300
    producer = dmxp.Producer(0, capacity=8, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    errors: list[BaseException] = []

    def send(tag: int) -> None:
        try:
            for i in range(per_thread):
                producer.send_timeout(pattern.encode(tag, i, 40), LONG)
        except BaseException as e:
            errors.append(e)

    senders = [threading.Thread(target=send, args=(tag,)) for tag in range(threads)]
    for thread in senders:
        thread.start()
    got = []
    deadline = time.monotonic() + LONG
    while len(got) < threads * per_thread:
        assert time.monotonic() < deadline, f"only {len(got)} messages arrived"
        got.extend(pattern.decode(p) for p in consumer.receive_batch(16, timeout=0.1))
    for thread in senders:
        thread.join(LONG)
    assert errors == []
    assert sorted(got) == sorted((tag, i) for tag in range(threads) for i in range(per_thread))
    records = dmxp.peers(segment)
    # One consumer record, and one producer record per sending thread at most.
    assert [r["role"] for r in records].count("consumer") == 1
    assert 1 <= [r["role"] for r in records].count("producer") <= threads
    assert all(r["pid"] == os.getpid() and r["intent_count"] == 0 for r in records)
    producer.close()
    consumer.close()
    assert dmxp.peers(segment) == []


def test_a_handle_shared_by_many_blocked_threads_takes_a_bounded_share_of_the_table(
    segment: str,
) -> None:
    """More threads block on one consumer than it keeps registrations for: the others wait
    for a registration to come back, and every message still arrives exactly once."""
    limit = dmxp.REGISTRATIONS_PER_HANDLE
    threads = 6 * limit
    producer = dmxp.Producer(0, capacity=128, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    got: list[bytes] = []
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            message = consumer.receive(timeout=LONG)
            assert message is not None
            got.append(message)
        except BaseException as e:
            errors.append(e)

    receivers = [threading.Thread(target=receive) for _ in range(threads)]
    for thread in receivers:
        thread.start()
    # Hang guard, not a timing assertion: `limit` of them are soon asleep in the channel.
    deadline = time.monotonic() + LONG
    while consumer.info()["receivers_waiting"] < limit:
        assert time.monotonic() < deadline, consumer.info()
        time.sleep(0.01)
    for _ in range(20):  # while they all wait, the share never grows
        roles = [r["role"] for r in dmxp.peers(segment)]
        assert roles.count("consumer") <= limit
        assert consumer.info()["receivers_waiting"] <= limit
        time.sleep(0.005)
    for i in range(threads):
        producer.send(b"%d" % i)
    for thread in receivers:
        thread.join(LONG)
    assert errors == []
    assert sorted(got) == sorted(b"%d" % i for i in range(threads))
    assert [r["role"] for r in dmxp.peers(segment)].count("consumer") <= limit
    consumer.close()
    producer.close()


def test_a_full_peer_table_leaves_handles_working_unregistered(segment: str) -> None:
    producer = dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT)
    taken = {r["index"] for r in dmxp.peers(segment)}
    with mapped(segment) as mm:
        # Records of this (live) process: never judged dead.
        for index in set(range(dmxp.PEER_RECORDS)) - taken:
            write_record(mm, index, pid=os.getpid(), role=2, runtime=3)
    assert len(dmxp.peers(segment)) == dmxp.PEER_RECORDS
    consumer = dmxp.Consumer(0, segment=segment)
    assert not consumer.is_registered
    producer.send(b"still works")
    assert consumer.receive() == b"still works"
    consumer.close()
    assert len(dmxp.peers(segment)) == dmxp.PEER_RECORDS
    producer.close()


def test_peer_table_errors_are_typed(segment: str, golden_copy) -> None:
    assert issubclass(dmxp.PeerTableFullError, dmxp.OutOfSpaceError)
    # Not 64-aligned: refused at attach.
    name = golden_copy({48: struct.pack("<Q", layout.HEADER_SIZE + 1)})
    for open_it in (lambda: dmxp.Consumer(0, segment=name), lambda: dmxp.peers(name)):
        with pytest.raises(dmxp.CorruptError) as info:
            open_it()
        assert info.value.field == "peer_table_offset"
    # A table over channel 0's band: the validator refuses it, a handle opens unregistered.
    producer = dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT)
    with mapped(segment) as mm:
        table = u64_at(mm, 48)
        struct.pack_into("<Q", mm, 48, producer.info()["band_offset"])
        try:
            with pytest.raises(dmxp.CorruptError) as info:
                dmxp.parse_segment(bytes(mm))
            assert info.value.field == "peer_table_offset"
            with pytest.raises(dmxp.CorruptError):
                dmxp.peers(segment)
            with dmxp.Consumer(0, segment=segment) as consumer:
                assert not consumer.is_registered
        finally:
            struct.pack_into("<Q", mm, 48, table)
    with mapped(segment) as mm:
        assert dmxp.parse_segment(bytes(mm))["header"]["peer_table_offset"] == table
    producer.close()


# ------------------------------------------------------------------ repair


def receive_ids(consumer: dmxp.Consumer, how: str, count: int) -> list[int]:
    """Receives ``count`` messages the way ``how`` says; returns their message ids after
    checking each payload."""
    got: list[dmxp.Message] = []
    deadline = time.monotonic() + LONG
    while len(got) < count:
        assert time.monotonic() < deadline, f"stuck after {[m.message_id for m in got]}"
        if how == "blocking":
            message = consumer.receive_with_meta(timeout=LONG)
            got.extend([message] if message is not None else [])
        elif how == "polling":
            message = consumer.receive_with_meta()
            got.extend([message] if message is not None else [])
            time.sleep(0.001)
        else:
            # Without waiting: the repair and the tombstone are then the batch path's.
            got.extend(consumer.receive_batch_with_meta(count - len(got)))
            time.sleep(0.001)
    for message in got:
        assert message.payload == payload(message.message_id)
    return [m.message_id for m in got]


@pytest.mark.parametrize("how", ["blocking", "polling", "batch"])
def test_consumer_tombstones_the_claim_of_a_killed_producer(
    segment: str, children: list[Child], how: str
) -> None:
    capacity = 8
    producer = dmxp.Producer(0, capacity=capacity, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    for i in range(3):
        assert producer.send(payload(i)) == i
    child = Child("producer", segment)
    children.append(child)
    child.kill()
    assert not records_of(segment, child.pid)[0]["alive"]
    lost = forge_producer_claim(segment, child.record["index"])
    assert lost == 3
    # Others go on sending behind the stuck position, up to a full ring.
    for i in range(lost + 1, capacity):
        assert producer.send(payload(i)) == i
    ids = receive_ids(consumer, how, capacity - 1)
    assert ids == [0, 1, 2] + list(range(lost + 1, capacity))
    assert consumer.lost == consumer.stats["lost"] == 1
    # The dead record was freed; the live ones stay.
    assert records_of(segment, child.pid) == []
    assert len(dmxp.peers(segment)) == 2
    # The channel keeps flowing, lap after lap, every message once and in order.
    for i in range(capacity, 6 * capacity):
        producer.send_timeout(payload(i), LONG)
        assert consumer.receive_with_meta(timeout=LONG).message_id == i
    assert consumer.receive() is None
    assert consumer.lost == 1
    producer.close()
    consumer.close()


@pytest.mark.parametrize("how", ["blocking", "polling", "batch"])
def test_producer_frees_the_slot_of_a_killed_consumer(
    segment: str, children: list[Child], how: str
) -> None:
    capacity = 4
    producer = dmxp.Producer(0, capacity=capacity, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    for i in range(2):
        producer.send(payload(i))
    child = Child("consumer", segment)
    children.append(child)
    child.kill()
    lost = forge_consumer_claim(segment, child.record["index"])
    assert lost == 0
    assert consumer.receive_with_meta().message_id == 1
    for i in range(2, capacity):
        producer.send(payload(i))
    # Position 4 needs slot 0, which the dead consumer claimed and never freed.
    with pytest.raises(dmxp.FullError):
        producer.send(payload(capacity))
    deadline = time.monotonic() + LONG
    if how == "blocking":
        assert producer.send_timeout(payload(capacity), LONG) == capacity
    elif how == "polling":
        while (sent := producer.try_send(payload(capacity))) is None:
            assert time.monotonic() < deadline, "the ring stayed full"
            time.sleep(0.001)
        assert sent == capacity
    else:
        assert producer.send_batch([payload(capacity)], timeout=LONG) == 1
    assert records_of(segment, child.pid) == []
    # Everything but the dead consumer's message arrives, once, in order.
    assert receive_ids(consumer, "blocking", capacity - 1) == list(range(2, capacity + 1))
    for i in range(capacity + 1, capacity + 1 + 5 * capacity):
        producer.send_timeout(payload(i), LONG)
        assert consumer.receive_with_meta(timeout=LONG).message_id == i
    assert consumer.receive() is None
    assert consumer.lost == 0  # the message was lost with its consumer, not tombstoned
    producer.close()
    consumer.close()


def test_a_live_peer_s_claim_is_left_alone_until_it_dies(
    segment: str, children: list[Child]
) -> None:
    producer = dmxp.Producer(0, capacity=8, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    child = Child("producer", segment)
    children.append(child)
    position = forge_producer_claim(segment, child.record["index"])
    producer.send(payload(position + 1))
    # Its owner is alive (only slow): no repair however long the channel stays stuck.
    assert consumer.receive(timeout=5 * dmxp.STUCK_GRACE) is None
    assert consumer.recover() == {
        "tombstoned": 0,
        "freed": 0,
        "records_freed": 0,
        "records_deferred": 0,
        "waits_given_back": 0,
    }
    assert consumer.lost == 0
    child.kill()
    assert consumer.recover()["tombstoned"] == 1
    message = consumer.receive_with_meta(timeout=LONG)
    assert message is not None and message.message_id == position + 1
    assert consumer.lost == 1
    producer.close()
    consumer.close()


def test_a_reused_pid_does_not_keep_a_dead_record_alive(
    segment: str, children: list[Child]
) -> None:
    """A record whose pid now belongs to another process (its start time differs) is dead."""
    producer = dmxp.Producer(0, capacity=8, segment=segment, size=SMALL_SEGMENT)
    consumer = dmxp.Consumer(0, segment=segment)
    stranger = Child("consumer", segment)  # alive: stands for the process that got the pid
    children.append(stranger)
    taken = {r["index"] for r in dmxp.peers(segment)}
    index = min(set(range(dmxp.PEER_RECORDS)) - taken)
    with mapped(segment) as mm:
        write_record(
            mm,
            index,
            pid=stranger.pid,
            runtime=3,
            role=layout.ROLE_PRODUCER,
            start_time=start_time(stranger.pid) + 1,
        )
    position = forge_producer_claim(segment, index)
    producer.send(payload(position + 1))
    message = consumer.receive_with_meta(timeout=LONG)
    assert message is not None and message.message_id == position + 1
    assert consumer.lost == 1
    # The stranger's own record is untouched.
    assert [r["index"] for r in records_of(segment, stranger.pid)] == [stranger.record["index"]]
    producer.close()
    consumer.close()


@pytest.mark.parametrize("role", ["consumer", "producer"])
def test_a_killed_waiter_s_count_is_given_back_when_a_peer_registers(
    segment: str, children: list[Child], role: str
) -> None:
    """Section 11.9: a waiter names its wait count in its record, and the registration sweep
    of the next handle (11.10) gives the count of a killed waiter back."""
    capacity = 4
    producer = dmxp.Producer(0, capacity=capacity, segment=segment, size=SMALL_SEGMENT)
    if role == "producer":
        for i in range(capacity):
            producer.send(payload(i))
    count = "receivers_waiting" if role == "consumer" else "senders_waiting"
    child = Child(role, segment, wait=True)
    children.append(child)
    # Hang guard, not a timing assertion: the child blocks right after registering.
    deadline = time.monotonic() + LONG
    while producer.info()[count] != 1 or records_of(segment, child.pid)[0]["waiting"] is None:
        assert time.monotonic() < deadline, producer.info()
        time.sleep(0.01)
    expected = "message" if role == "consumer" else "free_slot"
    assert records_of(segment, child.pid)[0]["waiting"] == expected
    child.kill()
    assert producer.info()[count] == 1, "nobody has given the count back yet"
    consumer = dmxp.Consumer(0, segment=segment)  # registers, sweeping dead records first
    assert producer.info()["receivers_waiting"] == 0
    assert producer.info()["senders_waiting"] == 0
    assert records_of(segment, child.pid) == []
    consumer.close()
    producer.close()
