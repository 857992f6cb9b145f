#!/usr/bin/env python3
"""The corruption matrix: every client against segments corrupted field by field.

For each case, a fresh POSIX shm segment gets channels 0 and 1 (capacity 8) and a few good
messages from the Rust producer; then one field of the header, of channel 0's entry or of its
slots is overwritten in place (offsets from docs/PROTOCOL.md section 2), and each client's
consumer and then its producer run against it under a hang guard. Each run is classified:

  OK       exit 0 (for a consumer: with its summary line)
  COUNTED  a consumer exited non-zero only because it counted lost/corrupt messages
  ERROR    a non-zero exit with a one-line error from the client (a typed error)

and these are failures whatever the case: SIGNAL (killed by a signal), HANG (the guard
expired), SANITIZER (an ASan/UBSan report from the C client), PANIC (a Rust or Go panic),
TRACEBACK (a Python exception that is not a dmxp.DmxpError). On top, each case states what it
expects (for example: bad magic -> an ERROR naming `magic`, for every client and role;
payload_len 5000 -> the consumer counts one bad message and still gets the three others).

The blob cases (names starting "blob:") do the same on a segment with a blob pool (PROTOCOL.md
section 13), seeded with blobs and run with every client's --blob switch: a corrupt pool
descriptor must be refused by every client and role with a typed error, and a bad reference
(out of the pool, stale, too long, a block not queued) counted as one bad message while the
others arrive.

Stdlib only (Python >= 3.11). scripts/corruption-matrix.sh builds the programs and calls this.
Exits 1 on any failure, 2 on a setup problem.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable

# --- Layout (docs/PROTOCOL.md section 2) ----------------------------------------------------
MAGIC_VALUE = 0x444D58505F4D454D
HEADER_SIZE = 98_432
ENTRY_BASE, ENTRY_SIZE = 128, 384
SLOT_SIZE = 1088
# header
H_MAGIC, H_VERSION, H_MAX_CHANNELS, H_CHANNEL_COUNT = 0, 8, 12, 16
H_SEGMENT_SIZE, H_BAND_CURSOR, H_PEER_TABLE, H_PEER_RECORDS = 24, 32, 48, 56
# channel entry
E_CHANNEL_ID, E_CAPACITY, E_BAND_OFFSET, E_STATE = 0, 8, 16, 24
E_TAIL, E_HEAD = 128, 256
# slot
S_SEQUENCE, S_META, S_FLAGS, S_PAYLOAD_LEN, S_PAYLOAD = 0, 8, 38, 40, 64
META_SIZE = 40
FLAG_SKIP, FLAG_LOST, FLAG_RUN, FLAG_RUN_CONT = 0x1, 0x2, 0x4, 0x8
S_RUN_SLOTS, S_RUN_INDEX = 48, 52
E_FLAGS, E_MAX_MESSAGE_SIZE = 4, 80

SEGMENT_BYTES = 256 * 1024
CAPACITY = 8
# Channels are made for messages of up to a whole ring (section 12), so the run cases below
# mean something; the seeded messages are single-slot ones.
MAX_MESSAGE_SIZE = CAPACITY * 960
SEEDED = 4  # good messages on each channel before the corruption (indices 0..3)
PRODUCED = 2  # messages each client's producer then sends (indices 4, 5)

FAILURES = ("SIGNAL", "HANG", "SANITIZER", "PANIC", "TRACEBACK")

SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|UndefinedBehaviorSanitizer"
    r"|:\d+:\d+: runtime error:"
)
RUST_PANIC_RE = re.compile(r"panicked at|PanicException")
GO_PANIC_RE = re.compile(r"^panic: |^fatal error: |^goroutine \d+ \[", re.MULTILINE)
TRACEBACK_RE = re.compile(r"Traceback \(most recent call last\)")
# The consumers' summary line (Go says "missing", the others "lost").
SUMMARY_RE = re.compile(
    r"received (\d+) messages on \d+ channels .*?(?:lost|missing) (\d+), duplicated (\d+), "
    r"corrupt (\d+)"
)
CLI_SKIPPED_RE = re.compile(r"skipped (\d+) lost and (\d+) corrupt")
TOMBSTONES_RE = re.compile(r"(\d+) LOST tombstones")
# stderr lines that report counts or degraded service, not an error
NOTE_RE = re.compile(r"giving up|skipped \d+|LOST tombstones|not registered in the peer table")


# --- The segment -----------------------------------------------------------------------------
class Seg:
    """Reads and writes little-endian fields of a segment through its /dev/shm file."""

    def __init__(self, name: str) -> None:
        self.path = "/dev/shm/" + name.lstrip("/")
        self.f = open(self.path, "r+b")  # noqa: SIM115 (closed by close())

    def close(self) -> None:
        self.f.close()

    def read(self, offset: int, size: int) -> int:
        self.f.seek(offset)
        return int.from_bytes(self.f.read(size), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.f.seek(offset)
        self.f.write((value % (1 << (8 * size))).to_bytes(size, "little"))
        self.f.flush()

    def write_bytes(self, offset: int, data: bytes) -> None:
        self.f.seek(offset)
        self.f.write(data)
        self.f.flush()

    def entry(self, channel: int) -> int:
        return ENTRY_BASE + channel * ENTRY_SIZE

    def band(self, channel: int) -> int:
        return self.read(self.entry(channel) + E_BAND_OFFSET, 8)

    def slot(self, channel: int, index: int) -> int:
        return self.band(channel) + index * SLOT_SIZE

    def segment_len(self) -> int:
        return self.read(H_SEGMENT_SIZE, 8) or os.path.getsize(self.path)

    # shorthands used by the cases
    def h(self, off: int, size: int, value: int) -> None:
        self.write(off, size, value)

    def e(self, off: int, size: int, value: int, channel: int = 0) -> None:
        self.write(self.entry(channel) + off, size, value)

    def s(self, index: int, off: int, size: int, value: int, channel: int = 0) -> None:
        self.write(self.slot(channel, index) + off, size, value)


# --- Cases -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Expect:
    """What one role of every client must do on a case."""

    kind: str  # "error": an ERROR matching `names`; "safe": no failure; "deliver": see below
    names: str = ""  # regex the error must match (case-insensitive)
    received: tuple[int, int] = (0, SEEDED)  # deliver: inclusive range of good messages
    counted: bool = False  # deliver: at least one bad message must be counted
    # deliver: the bad message is bad by the protocol (payload_len > 960, LOST), not only by
    # the examples' payload pattern; only then must the `dmxp recv` CLI count it too
    protocol_bad: bool = False
    # deliver: a typed error matching this is accepted too (a cursor or sequence that never
    # settles makes a claim give up with Busy, PROTOCOL.md section 4.3)
    may_fail: str = ""


def error(names: str) -> Expect:
    return Expect("error", names=names)


SAFE = Expect("safe")


def deliver(
    lo: int,
    hi: int | None = None,
    counted: bool = False,
    protocol: bool = False,
    busy: bool = False,
) -> Expect:
    return Expect(
        "deliver",
        received=(lo, lo if hi is None else hi),
        counted=counted,
        protocol_bad=protocol,
        may_fail=BUSY_RE if busy else "",
    )


BUSY_RE = r"busy|contended retries"


@dataclasses.dataclass
class Case:
    name: str
    corrupt: Callable[[Seg], None]
    consumer: Expect
    producer: Expect
    # A segment with a blob pool and channels that carry blobs (PROTOCOL.md section 13),
    # seeded with blobs and run with every client's --blob switch.
    blob: bool = False


def both(name: str, corrupt: Callable[[Seg], None], names: str) -> Case:
    return Case(name, corrupt, error(names), error(names))


# --- The blob pool (docs/PROTOCOL.md section 13) ---------------------------------------------
H_BLOB_POOL = 64
BLOB_SEGMENT_BYTES = 48 * 1024 * 1024
P_MAGIC, P_CLASS_COUNT, P_CLASSES, CLASS_SIZE = 0, 8, 64, 64
C_BLOCK_SIZE, C_BLOCK_COUNT, C_HEADERS, C_DATA = 0, 8, 16, 24
BLOB_TAG_HELD = 3


def pool(seg: Seg) -> int:
    return seg.read(H_BLOB_POOL, 8)


def blob_class(seg: Seg, i: int, field: int) -> int:
    return pool(seg) + P_CLASSES + i * CLASS_SIZE + field


def every_tag_of_class0_held(seg: Seg) -> None:
    headers = seg.read(blob_class(seg, 0, C_HEADERS), 8)
    for j in range(seg.read(blob_class(seg, 0, C_BLOCK_COUNT), 4)):
        tag = seg.read(headers + 64 * j, 8)
        seg.write(headers + 64 * j, 8, (tag & ~0xFF) | BLOB_TAG_HELD)


def blob_case(name: str, corrupt: Callable[[Seg], None], consumer: Expect, producer: Expect) -> Case:
    return Case(name, corrupt, consumer, producer, blob=True)


POOL_RE = r"pool|blob|block"
# A reference in slot `i` of channel 0 (its payload: class u8, block u32 at 4, generation u32
# at 8, length u32 at 12).
BLOB_CASES: list[Case] = [
    blob_case("blob: no corruption", lambda g: None, deliver(SEEDED), SAFE),
    blob_case("blob: pool_magic", lambda g: g.h(pool(g) + P_MAGIC, 8, 0x1234), error(POOL_RE), error(POOL_RE)),
    blob_case("blob: blob_pool_offset 100", lambda g: g.h(H_BLOB_POOL, 8, 100), error(POOL_RE), error(POOL_RE)),
    blob_case(
        "blob: blob_pool_offset past the end",
        lambda g: g.h(H_BLOB_POOL, 8, g.segment_len() - 64),
        error(POOL_RE),
        error(POOL_RE),
    ),
    blob_case("blob: class_count 9", lambda g: g.h(pool(g) + P_CLASS_COUNT, 4, 9), error(POOL_RE), error(POOL_RE)),
    blob_case(
        "blob: block_count 2^25",
        lambda g: g.h(blob_class(g, 0, C_BLOCK_COUNT), 4, 2**25),
        error(POOL_RE),
        error(POOL_RE),
    ),
    blob_case(
        "blob: block_size not a multiple of 64",
        lambda g: g.h(blob_class(g, 1, C_BLOCK_SIZE), 8, (1 << 20) + 1),
        error(POOL_RE),
        error(POOL_RE),
    ),
    blob_case(
        "blob: class 1's blocks over class 0's",
        lambda g: g.h(blob_class(g, 1, C_DATA), 8, g.read(blob_class(g, 0, C_DATA), 8)),
        error(POOL_RE),
        error(POOL_RE),
    ),
    blob_case(
        "blob: reference to block 2^20",
        lambda g: g.s(1, S_PAYLOAD + 4, 4, 2**20),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    blob_case(
        "blob: reference to class 7",
        lambda g: g.s(2, S_PAYLOAD, 1, 7),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    blob_case(
        "blob: stale generation",
        lambda g: g.s(1, S_PAYLOAD + 8, 4, g.read(g.slot(0, 1) + S_PAYLOAD + 8, 4) + 1),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    blob_case(
        "blob: length past its block",
        lambda g: g.s(0, S_PAYLOAD + 12, 4, 2**31),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    blob_case(
        "blob: every tag of class 0 HELD",
        every_tag_of_class0_held,
        deliver(2, counted=True, protocol=True),
        SAFE,
    ),
]


def garbage_sequences(seg: Seg) -> None:
    rng = random.Random(5)
    for i in range(CAPACITY):
        seg.s(i, S_SEQUENCE, 8, rng.getrandbits(64))


def garbage_meta(seed: int, keep_len: bool) -> Callable[[Seg], None]:
    def corrupt(seg: Seg) -> None:
        rng = random.Random(seed)
        for i in range(SEEDED):
            slot = seg.slot(0, i)
            length = seg.read(slot + S_PAYLOAD_LEN, 4)
            seg.write_bytes(slot + S_META, rng.randbytes(META_SIZE))
            if keep_len:
                seg.write(slot + S_PAYLOAD_LEN, 4, length)

    return corrupt


def garbage_slot(seg: Seg) -> None:
    rng = random.Random(11)
    seg.write_bytes(seg.slot(0, 1), rng.randbytes(SLOT_SIZE))


def overlap(seg: Seg) -> None:
    seg.e(E_BAND_OFFSET, 8, seg.band(1) + SLOT_SIZE)


def overlap_exact(seg: Seg) -> None:
    seg.e(E_BAND_OFFSET, 8, seg.band(1))


def band_cursor_past_end(seg: Seg) -> None:
    seg.h(H_BAND_CURSOR, 8, seg.segment_len() + 64)


def band_tail_outside(seg: Seg) -> None:
    # starts inside the segment, ends past it
    seg.e(E_BAND_OFFSET, 8, seg.segment_len() - 2 * SLOT_SIZE - (seg.segment_len() % 64))


def truncate(size: Callable[[Seg], int]) -> Callable[[Seg], None]:
    def corrupt(seg: Seg) -> None:
        os.truncate(seg.path, size(seg))

    return corrupt


def forged_run_start(seg: Seg, slot: int, length: int, run_slots: int) -> None:
    """Makes `slot` claim to start a run of `run_slots` slots holding `length` bytes."""
    seg.s(slot, S_FLAGS, 2, FLAG_RUN)
    seg.s(slot, S_PAYLOAD_LEN, 4, length)
    seg.s(slot, S_RUN_SLOTS, 4, run_slots)


def published_free_slots(seg: Seg) -> None:
    # slots 4..7 (never written) marked as published: zeroed meta, payload_len 0
    for i in range(SEEDED, CAPACITY):
        seg.s(i, S_SEQUENCE, 8, i + 1)


CASES: list[Case] = [
    # header
    both("magic garbage", lambda g: g.h(H_MAGIC, 8, 0x0123456789ABCDEF), r"magic"),
    both(
        "magic byte-swapped",
        lambda g: g.h(H_MAGIC, 8, int.from_bytes(MAGIC_VALUE.to_bytes(8, "little"), "big")),
        r"magic",
    ),
    both("magic 0 (never formatted)", lambda g: g.h(H_MAGIC, 8, 0), r"creat|not ready|format"),
    both("version 2", lambda g: g.h(H_VERSION, 4, 2), r"version"),
    both("version 0xffffffff", lambda g: g.h(H_VERSION, 4, 0xFFFFFFFF), r"version"),
    both("max_channels 255", lambda g: g.h(H_MAX_CHANNELS, 4, 255), r"max.?channels"),
    both("max_channels 0", lambda g: g.h(H_MAX_CHANNELS, 4, 0), r"max.?channels"),
    both("channel_count 257", lambda g: g.h(H_CHANNEL_COUNT, 4, 257), r"channel.?count"),
    both("channel_count 2^32-1", lambda g: g.h(H_CHANNEL_COUNT, 4, 2**32 - 1), r"channel.?count"),
    # peer_records (section 11.1): 0 or 256..=16,384; a smaller table would let a client that
    # predates the field read past it
    both("peer_records 100", lambda g: g.h(H_PEER_RECORDS, 4, 100), r"peer.?records"),
    both("peer_records 2^32-1", lambda g: g.h(H_PEER_RECORDS, 4, 2**32 - 1), r"peer.?records"),
    both("segment_size 2^40", lambda g: g.h(H_SEGMENT_SIZE, 8, 2**40), r"segment.?size"),
    both("segment_size 4096", lambda g: g.h(H_SEGMENT_SIZE, 8, 4096), r"segment.?size"),
    both("band_cursor past the end", band_cursor_past_end, r"band.?cursor"),
    both(
        "band_cursor misaligned", lambda g: g.h(H_BAND_CURSOR, 8, HEADER_SIZE + 8), r"band.?cursor"
    ),
    both("file truncated below segment_size", truncate(lambda g: g.band(1)), r"segment.?size|size"),
    both("file truncated to 4096 bytes", truncate(lambda g: 4096), r"creat|small|size|ready"),
    # values the protocol accepts (older writers): every client must go on working
    Case(
        "segment_size 0 (not recorded)", lambda g: g.h(H_SEGMENT_SIZE, 8, 0), deliver(SEEDED), SAFE
    ),
    Case("band_cursor 0 (no allocator)", lambda g: g.h(H_BAND_CURSOR, 8, 0), deliver(SEEDED), SAFE),
    Case("channel_count 0", lambda g: g.h(H_CHANNEL_COUNT, 4, 0), deliver(SEEDED), SAFE),
    Case(
        "reserved header bytes garbage",
        # every unnamed header byte (section 1.1); 64..72 is blob_pool_offset, its own cases
        lambda g: (g.write_bytes(60, b"\x5a" * 4), g.write_bytes(72, b"\x5a" * 56)),
        deliver(SEEDED),
        SAFE,
    ),
    # entry flags and max_message_size (section 12.1): checked at open by every client
    both("entry flags: an unknown bit", lambda g: g.e(E_FLAGS, 4, 0x3), r"flags"),
    both("entry flags 0xffffffff", lambda g: g.e(E_FLAGS, 4, 0xFFFFFFFF), r"flags"),
    both(
        "max_message_size past the ring",
        lambda g: g.e(E_MAX_MESSAGE_SIZE, 4, CAPACITY * 960 + 1),
        r"max.?message",
    ),
    both("max_message_size 960 with RUNS", lambda g: g.e(E_MAX_MESSAGE_SIZE, 4, 960), r"max.?message"),
    both(
        "max_message_size without RUNS",
        lambda g: g.e(E_FLAGS, 4, 0),
        r"max.?message",
    ),
    Case(
        "entry stuck notes and reserved bytes garbage",
        lambda g: (
            g.write_bytes(g.entry(0) + 48, b"\x5a" * 32),
            g.write_bytes(g.entry(0) + 84, b"\x5a" * 44),
        ),
        deliver(SEEDED),
        SAFE,
    ),
    # the peer table (section 11): a client that knows it refuses a bad offset, one that does
    # not yet ignores it; neither may touch memory outside the segment
    Case("peer_table_offset 2^40", lambda g: g.h(H_PEER_TABLE, 8, 2**40), SAFE, SAFE),
    Case("peer_table_offset 2^64-64", lambda g: g.h(H_PEER_TABLE, 8, 2**64 - 64), SAFE, SAFE),
    Case(
        "peer_table_offset 128 (inside the header)", lambda g: g.h(H_PEER_TABLE, 8, 128), SAFE, SAFE
    ),
    Case(
        "peer_table_offset at the last 64 bytes",
        lambda g: g.h(H_PEER_TABLE, 8, (g.segment_len() - 64) // 64 * 64),
        SAFE,
        SAFE,
    ),
    Case(
        "peer_table_offset misaligned", lambda g: g.h(H_PEER_TABLE, 8, HEADER_SIZE + 8), SAFE, SAFE
    ),
    Case(
        "peer_table_offset = channel 0's band",
        lambda g: g.h(H_PEER_TABLE, 8, g.band(0)),
        SAFE,
        SAFE,
    ),
    # channel 0's entry
    both("capacity 0 (state READY)", lambda g: g.e(E_CAPACITY, 8, 0), r"capacity"),
    both("capacity 6 (not a power of two)", lambda g: g.e(E_CAPACITY, 8, 6), r"capacity"),
    both("capacity 1", lambda g: g.e(E_CAPACITY, 8, 1), r"capacity"),
    both("capacity 2^40", lambda g: g.e(E_CAPACITY, 8, 2**40), r"capacity"),
    both("capacity 2^63", lambda g: g.e(E_CAPACITY, 8, 2**63), r"capacity"),
    both("band_offset 2^40 (past the end)", lambda g: g.e(E_BAND_OFFSET, 8, 2**40), r"band"),
    both("band_offset 2^64-64 (wraps)", lambda g: g.e(E_BAND_OFFSET, 8, 2**64 - 64), r"band"),
    both("band_offset: band ends past the end", band_tail_outside, r"band"),
    both(
        "band_offset 128 (inside the header)", lambda g: g.e(E_BAND_OFFSET, 8, 128), r"band|header"
    ),
    both("band_offset 0", lambda g: g.e(E_BAND_OFFSET, 8, 0), r"band|header"),
    both("band_offset overlaps channel 1", overlap, r"overlap"),
    both("band_offset = channel 1's band", overlap_exact, r"overlap"),
    both(
        "band_offset misaligned (+8)", lambda g: g.e(E_BAND_OFFSET, 8, g.band(0) + 8), r"band|align"
    ),
    both("channel_id 7", lambda g: g.e(E_CHANNEL_ID, 4, 7), r"channel.?id"),
    both("state 9", lambda g: g.e(E_STATE, 4, 9), r"state"),
    Case(
        "wait words garbage",
        lambda g: [g.e(off, 4, 0xFFFFFFFF - off) for off in (32, 36, 40, 44)],
        deliver(SEEDED),
        SAFE,
    ),
    Case(
        "segment_size cuts channel 1's band",
        lambda g: g.h(H_SEGMENT_SIZE, 8, g.band(1) + SLOT_SIZE),
        SAFE,
        SAFE,
    ),
    # cursors
    Case("tail 0 (moved back)", lambda g: g.e(E_TAIL, 8, 0), deliver(SEEDED), SAFE),
    Case("tail 2^63", lambda g: g.e(E_TAIL, 8, 2**63), deliver(SEEDED), SAFE),
    Case("tail 2^64-1", lambda g: g.e(E_TAIL, 8, 2**64 - 1), deliver(SEEDED), SAFE),
    Case("tail 3 (inside the messages)", lambda g: g.e(E_TAIL, 8, 3), deliver(SEEDED), SAFE),
    Case("head 2 (skips two)", lambda g: g.e(E_HEAD, 8, 2), deliver(2), SAFE),
    Case("head 2^63", lambda g: g.e(E_HEAD, 8, 2**63), deliver(0), SAFE),
    Case("head 2^64-1", lambda g: g.e(E_HEAD, 8, 2**64 - 1), deliver(0, busy=True), SAFE),
    Case("head 12 (a lap ahead)", lambda g: g.e(E_HEAD, 8, 12), deliver(0), SAFE),
    Case("head 5 (past tail)", lambda g: g.e(E_HEAD, 8, 5), deliver(0), SAFE),
    Case(
        "head and tail 2^64-3",
        lambda g: (g.e(E_HEAD, 8, 2**64 - 3), g.e(E_TAIL, 8, 2**64 - 3)),
        deliver(0, busy=True),
        SAFE,
    ),
    *[
        Case(
            f"head and tail random #{k}",
            lambda g, k=k: [
                g.e(off, 8, random.Random(100 + 2 * k + i).getrandbits(64))
                for i, off in enumerate((E_HEAD, E_TAIL))
            ],
            deliver(0, SEEDED, busy=True),
            SAFE,
        )
        for k in range(3)
    ],
    # sequences
    Case("sequences all garbage", garbage_sequences, deliver(0, SEEDED, busy=True), SAFE),
    *[
        Case(
            f"sequences random #{k} (near the positions)",
            lambda g, k=k: [
                g.s(i, S_SEQUENCE, 8, i + random.Random(200 + 8 * k + i).randint(-9, 9))
                for i in range(CAPACITY)
            ],
            deliver(0, SEEDED, counted=False, busy=True),
            SAFE,
        )
        for k in range(3)
    ],
    Case("sequence[1] = 0", lambda g: g.s(1, S_SEQUENCE, 8, 0), deliver(1), SAFE),
    Case("sequence[0] = 2^64-1", lambda g: g.s(0, S_SEQUENCE, 8, 2**64 - 1), deliver(0), SAFE),
    Case("sequence[2] = 2^63", lambda g: g.s(2, S_SEQUENCE, 8, 2**63), deliver(2, busy=True), SAFE),
    Case(
        "sequence[2] a lap ahead",
        lambda g: g.s(2, S_SEQUENCE, 8, 2 + 1 + CAPACITY),
        deliver(2, busy=True),
        SAFE,
    ),
    Case(
        "free slots marked published",
        published_free_slots,
        deliver(SEEDED, counted=True),
        SAFE,
    ),
    # payload_len
    Case(
        "payload_len 5000",
        lambda g: g.s(1, S_PAYLOAD_LEN, 4, 5000),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    Case(
        "payload_len 2^32-1",
        lambda g: g.s(1, S_PAYLOAD_LEN, 4, 2**32 - 1),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    Case(
        "payload_len 961",
        lambda g: g.s(1, S_PAYLOAD_LEN, 4, 961),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    Case("payload_len 0", lambda g: g.s(1, S_PAYLOAD_LEN, 4, 0), deliver(3, counted=True), SAFE),
    # metadata
    Case("meta garbage (payload_len kept)", garbage_meta(1, True), deliver(0, SEEDED), SAFE),
    Case("meta garbage", garbage_meta(2, False), deliver(0, SEEDED), SAFE),
    Case(
        "meta all 0xff",
        lambda g: g.write_bytes(g.slot(0, 2) + S_META, b"\xff" * META_SIZE),
        deliver(3),
        SAFE,
    ),  # flags 0xffff include SKIP: passed over, not counted
    Case("flags SKIP on slot 1", lambda g: g.s(1, S_FLAGS, 2, FLAG_SKIP), deliver(3), SAFE),
    Case(
        "flags LOST on slot 1",
        lambda g: g.s(1, S_FLAGS, 2, FLAG_LOST),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    # runs (section 12.4): a forged run start is counted once as corrupt, a continuation
    # without its start is passed over; the other messages arrive
    Case(
        "run: run_slots past the ring",
        lambda g: forged_run_start(g, 1, 2000, 1000),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    Case(
        "run: length disagrees with run_slots",
        lambda g: forged_run_start(g, 1, 2000, 2),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    Case(
        "run: length over the channel's limit",
        lambda g: forged_run_start(g, 1, MAX_MESSAGE_SIZE + 960, CAPACITY + 1),
        deliver(3, counted=True, protocol=True),
        SAFE,
    ),
    Case(
        "run: continuations that name another start",
        lambda g: (
            forged_run_start(g, 1, 1500, 2),
            g.s(2, S_FLAGS, 2, FLAG_RUN_CONT),
            g.s(2, S_PAYLOAD_LEN, 4, 1500),
            g.s(2, S_RUN_SLOTS, 4, 2),
            g.s(2, S_RUN_INDEX, 4, 1),
            g.s(2, S_META, 8, 77),
        ),
        deliver(2, counted=True, protocol=True),
        SAFE,
    ),
    Case(
        "run: a continuation without its start",
        lambda g: g.s(1, S_FLAGS, 2, FLAG_RUN_CONT),
        deliver(3),
        SAFE,
    ),
    Case(
        "payload garbage",
        lambda g: g.write_bytes(g.slot(0, 2) + S_PAYLOAD, b"\xa5" * 64),
        deliver(3, counted=True),
        SAFE,
    ),
    Case("slot 1 all garbage", garbage_slot, deliver(1, SEEDED), SAFE),
]


# --- Clients ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Client:
    name: str
    consumer: list[str]
    producer: list[str]


def client_commands(args: argparse.Namespace) -> list[Client]:
    py = [args.python]
    ex = os.path.join(args.repo, "bindings/python/examples")
    clients = [
        Client(
            "rust", [os.path.join(args.rust, "consumer")], [os.path.join(args.rust, "producer")]
        ),
        Client("c", [os.path.join(args.c, "consumer")], [os.path.join(args.c, "producer")]),
        Client("go", [os.path.join(args.go, "consumer")], [os.path.join(args.go, "producer")]),
        Client(
            "python", py + [os.path.join(ex, "consumer.py")], py + [os.path.join(ex, "producer.py")]
        ),
    ]
    if args.cli:
        clients.append(Client("cli", [args.cli, "recv"], [args.cli, "send"]))
    wanted = args.clients.split(",") if args.clients else None
    return [c for c in clients if wanted is None or c.name in wanted]


def consumer_argv(client: Client, segment: str, blob: bool = False) -> list[str]:
    if client.name == "cli":
        return client.consumer + [
            "--segment",
            segment,
            "--channel",
            "0",
            "--timeout-ms",
            "300",
            "--json",
        ]
    # idle mode: stop 300 ms after the last message, or after --wait if none ever arrives
    return client.consumer + [
        "1",
        str(SEEDED),
        "--segment",
        segment,
        "--wait",
        "2",
        "--idle-exit-ms",
        "300",
    ] + (["--blob"] if blob else [])


def producer_argv(client: Client, segment: str, blob: bool = False) -> list[str]:
    if client.name == "cli":
        return client.producer + [
            "--segment",
            segment,
            "--channel",
            "0",
            "--timeout-ms",
            "1000",
            "m4",
            "m5",
        ]
    return client.producer + [
        "1",
        str(PRODUCED),
        str(CAPACITY),
        "--segment",
        segment,
        "--first-index",
        str(SEEDED),
        "--full-wait",
        "1",
    ] + (["--blob"] if blob else [])


# --- Running and classifying -----------------------------------------------------------------
@dataclasses.dataclass
class Run:
    outcome: str  # OK, COUNTED, ERROR, or one of FAILURES
    rc: int | None
    out: str
    err: str
    received: int | None = None
    bad: int | None = None  # lost + corrupt counted by a consumer
    problems: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        text = error_lines(self.err) or [ln for ln in self.err.splitlines() if ln.strip()]
        return text[-1] if text else ""


def run(argv: list[str], timeout: float, env: dict[str, str]) -> Run:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
        out, err = proc.communicate()
        return Run("HANG", None, out, err)
    return classify(proc.returncode, out, err)


def classify(rc: int, out: str, err: str) -> Run:
    both_streams = out + err
    if SANITIZER_RE.search(both_streams):
        return Run("SANITIZER", rc, out, err)
    if RUST_PANIC_RE.search(both_streams) or GO_PANIC_RE.search(err):
        return Run("PANIC", rc, out, err)
    if TRACEBACK_RE.search(both_streams):
        return Run("TRACEBACK", rc, out, err)
    if rc < 0:
        return Run("SIGNAL", rc, out, err)
    r = Run("OK" if rc == 0 else "ERROR", rc, out, err)
    summary = SUMMARY_RE.search(out)
    if summary:
        r.received = int(summary.group(1))
        r.bad = int(summary.group(2)) + int(summary.group(4))
        r.bad += sum(int(n) for n in TOMBSTONES_RE.findall(err))
        # a consumer that only counted losses, with no error of its own on stderr
        if rc != 0 and not error_lines(err):
            r.outcome = "COUNTED"
    return r


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and not NOTE_RE.search(ln)]


def cli_consumer_counts(r: Run) -> None:
    r.received = sum(1 for ln in r.out.splitlines() if ln.startswith("{"))
    m = CLI_SKIPPED_RE.search(r.err)
    r.bad = int(m.group(1)) + int(m.group(2)) if m else 0
    if r.outcome == "ERROR" and m and not [ln for ln in error_lines(r.err)]:
        r.outcome = "COUNTED"
    if r.outcome == "OK" and r.bad:
        r.outcome = "COUNTED"


def check(expect: Expect, r: Run, role: str, cli: bool = False) -> None:
    if r.outcome in FAILURES:
        r.problems.append(f"{role}: {r.outcome}")
        return
    if expect.kind == "error":
        if r.outcome != "ERROR":
            r.problems.append(f"{role}: expected a typed error, got {r.outcome}")
        elif not re.search(expect.names, r.line(), re.IGNORECASE):
            r.problems.append(f"{role}: the error does not name /{expect.names}/: {r.line()!r}")
        elif len(error_lines(r.err)) > 3:
            r.problems.append(
                f"{role}: the error is not one short report ({len(error_lines(r.err))} lines)"
            )
        return
    if expect.kind == "deliver" and role == "consumer":
        if (
            r.outcome == "ERROR"
            and expect.may_fail
            and re.search(expect.may_fail, r.line(), re.IGNORECASE)
        ):
            return
        if r.outcome == "ERROR":
            r.problems.append(f"{role}: stopped with an error instead of skipping: {r.line()!r}")
            return
        lo, hi = expect.received
        if cli:  # `dmxp recv` prints every message, including ones only the pattern rejects
            hi = 1 << 64
        if r.received is None:
            r.problems.append(f"{role}: no summary line")
        elif not lo <= r.received <= hi:
            r.problems.append(f"{role}: received {r.received} good messages, expected {lo}..{hi}")
        if expect.counted and not r.bad and (expect.protocol_bad or not cli):
            r.problems.append(f"{role}: the bad message was not counted")


@dataclasses.dataclass
class Cell:
    case: Case
    client: Client
    consumer: Run | None = None
    producer: Run | None = None
    setup_error: str = ""

    @property
    def problems(self) -> list[str]:
        if self.setup_error:
            return [f"setup: {self.setup_error}"]
        return (self.consumer.problems if self.consumer else []) + (
            self.producer.problems if self.producer else []
        )


def run_cell(cell: Cell, index: int, args: argparse.Namespace, env: dict[str, str]) -> Cell:
    segment = f"/dmxp_corrupt_{os.getpid()}_{index}"
    path = "/dev/shm" + segment
    shape = (
        ["--size", str(BLOB_SEGMENT_BYTES), "--blob"]
        if cell.case.blob
        else ["--size", str(SEGMENT_BYTES), "--max-message-size", str(MAX_MESSAGE_SIZE)]
    )
    try:
        seed = subprocess.run(
            [
                os.path.join(args.rust, "producer"),
                "2",
                str(SEEDED),
                str(CAPACITY),
                "--segment",
                segment,
                *shape,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=args.timeout,
            env=env,
        )
        if seed.returncode != 0:
            cell.setup_error = f"seeding failed: {seed.stderr.strip()}"
            return cell
        seg = Seg(segment)
        try:
            cell.case.corrupt(seg)
        finally:
            seg.close()
        cell.consumer = run(consumer_argv(cell.client, segment, cell.case.blob), args.timeout, env)
        if cell.client.name == "cli":
            cli_consumer_counts(cell.consumer)
        check(cell.case.consumer, cell.consumer, "consumer", cell.client.name == "cli")
        cell.producer = run(producer_argv(cell.client, segment, cell.case.blob), args.timeout, env)
        check(cell.case.producer, cell.producer, "producer")
    except Exception as e:  # noqa: BLE001 (a harness problem, reported as the cell's failure)
        cell.setup_error = f"{type(e).__name__}: {e}"
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return cell


def self_test(env: dict[str, str]) -> list[str]:
    """The detectors must see each kind of failure, or the matrix proves nothing."""
    py = [sys.executable, "-c"]
    summary = (
        "consumer: received 3 messages on 1 channels of /x in 0s: 1 msgs/s; "
        "lost 0, duplicated 0, corrupt 1"
    )
    checks = [
        (run(py + ["import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], 10, env), "SIGNAL"),
        (run(py + ["import time; time.sleep(30)"], 0.5, env), "HANG"),
        (run(py + ["raise ValueError('boom')"], 10, env), "TRACEBACK"),
        (
            run(
                py + ["import sys; print('consumer: bad magic', file=sys.stderr); sys.exit(1)"],
                10,
                env,
            ),
            "ERROR",
        ),
        (classify(101, "", "thread 'main' panicked at src/ring.rs:1:1:\nattempt to add"), "PANIC"),
        (
            classify(2, "", "panic: runtime error: index out of range\n\ngoroutine 7 [running]:"),
            "PANIC",
        ),
        (
            classify(1, "", "==7==ERROR: AddressSanitizer: SEGV on unknown address 0x7f"),
            "SANITIZER",
        ),
        (classify(1, "", "dmxp.h:1:2: runtime error: shift exponent 64 is too large"), "SANITIZER"),
        (classify(1, summary, ""), "COUNTED"),
        (classify(0, summary.replace("corrupt 1", "corrupt 0"), ""), "OK"),
    ]
    wrong = [
        f"detector: got {r.outcome}, expected {want}" for r, want in checks if r.outcome != want
    ]
    bad = classify(0, "", "")
    check(error("magic"), bad, "self-test")
    if not bad.problems:
        wrong.append("an OK run passed a case that expects an error")
    counted = classify(1, summary, "")
    check(deliver(SEEDED, counted=True), counted, "consumer")
    if not counted.problems:
        wrong.append("3 messages passed a case that expects 4")
    return wrong


SHORT = {
    "OK": "ok",
    "COUNTED": "cnt",
    "ERROR": "err",
    "SIGNAL": "SIG",
    "HANG": "HANG",
    "SANITIZER": "ASAN",
    "PANIC": "PANIC",
    "TRACEBACK": "TRACE",
}


def cell_text(cell: Cell) -> str:
    if cell.setup_error:
        return "SETUP!"
    c = SHORT[cell.consumer.outcome] if cell.consumer else "-"
    p = SHORT[cell.producer.outcome] if cell.producer else "-"
    return f"{c}/{p}" + ("!" if cell.problems else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", required=True)
    parser.add_argument("--rust", required=True, help="directory of the Rust examples")
    parser.add_argument("--c", required=True, help="directory of the ASan-built C examples")
    parser.add_argument("--go", required=True, help="directory of the Go programs")
    parser.add_argument("--python", required=True, help="a Python with the dmxp package")
    parser.add_argument("--cli", help="the dmxp binary (adds the `cli` column)")
    parser.add_argument("--clients", help="comma-separated subset: rust,c,go,python,cli")
    parser.add_argument("--cases", help="regex: only cases whose name matches")
    parser.add_argument("--timeout", type=float, default=10.0, help="hang guard per process (s)")
    parser.add_argument("--jobs", type=int, default=4, help="cells run at once")
    parser.add_argument("--verbose", action="store_true", help="print every run's output")
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.pop("DMXP_SEGMENT", None)
    env["RUST_BACKTRACE"] = "0"

    wrong = self_test(env)
    if wrong:
        print(
            "corruption matrix: the self-test of the failure detectors failed:", *wrong, sep="\n  "
        )
        return 2

    cases = [c for c in CASES + BLOB_CASES if not args.cases or re.search(args.cases, c.name)]
    clients = client_commands(args)
    cells = [Cell(case, client) for case in cases for client in clients]
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_cell, cell, i, args, env) for i, cell in enumerate(cells)]
            for f in futures:
                f.result()
    finally:  # an interrupted run still leaves /dev/shm clean
        for leftover in glob.glob(f"/dev/shm/dmxp_corrupt_{os.getpid()}_*"):
            os.unlink(leftover)
    elapsed = time.monotonic() - started

    width = max(len(c.name) for c in cases)
    print(
        "consumer/producer outcome per client: ok = exit 0, cnt = bad messages counted, "
        "err = typed error; '!' = not what the case expects"
    )
    print(f"{'case':<{width}}  " + "  ".join(f"{c.name:<11}" for c in clients))
    by_case = {case.name: [cell for cell in cells if cell.case is case] for case in cases}
    for case in cases:
        print(
            f"{case.name:<{width}}  " + "  ".join(f"{cell_text(c):<11}" for c in by_case[case.name])
        )

    failed = [cell for cell in cells if cell.problems]
    for cell in cells:
        if not (cell.problems or args.verbose):
            continue
        print(f"\n--- {cell.case.name} / {cell.client.name}: {'; '.join(cell.problems) or 'ok'}")
        for role, r in (("consumer", cell.consumer), ("producer", cell.producer)):
            if r is None:
                continue
            print(f"  {role}: {r.outcome} rc={r.rc}")
            for stream, text in (("out", r.out), ("err", r.err)):
                lines = text.splitlines()
                for ln in lines[:25]:
                    print(f"    {stream}| {ln}")
                if len(lines) > 25:
                    print(f"    {stream}| ... ({len(lines) - 25} more lines)")
    runs = sum((c.consumer is not None) + (c.producer is not None) for c in cells)
    print(
        f"\ncorruption matrix: {len(cases)} cases x {len(clients)} clients = {len(cells)} cells "
        f"({runs} runs) in {elapsed:.1f}s; {len(failed)} failed"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
