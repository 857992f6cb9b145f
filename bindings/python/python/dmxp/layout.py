"""The version-1 wire layout (``docs/PROTOCOL.md`` section 2), decoded in pure Python.

These readers decode a *copy* of segment bytes field by field with :mod:`struct`, for tools
and tests (the golden-bytes tests). They do not validate: use :func:`dmxp.parse_segment` (the
Rust core's validator) for that, or ``python -m dmxp inspect`` (:mod:`dmxp.cli`) for every
problem at once. Live segments are accessed only through :class:`dmxp.Producer` and
:class:`dmxp.Consumer`, which use atomics.
"""

from __future__ import annotations

import struct
from typing import cast

MAGIC = 0x444D58505F4D454D
VERSION = 1
MAX_CHANNELS = 256
CHANNEL_TABLE_OFFSET = 128
CHANNEL_ENTRY_SIZE = 384
HEADER_SIZE = CHANNEL_TABLE_OFFSET + MAX_CHANNELS * CHANNEL_ENTRY_SIZE  # 98,432
SLOT_SIZE = 1088
PAYLOAD_OFFSET = 64
MSG_INLINE = 960

#: Entry ``state`` values.
STATE_EMPTY, STATE_CREATING, STATE_READY = 0, 1, 2
#: Protocol ``flags`` bits of a slot's meta: a skip marker, a lost-message tombstone, the
#: first slot of a run (a message longer than one slot, section 12.2), a continuation.
FLAG_SKIP, FLAG_LOST, FLAG_RUN, FLAG_RUN_CONT = 0x0001, 0x0002, 0x0004, 0x0008
#: Entry ``flags`` bit: the channel may carry runs, up to its ``max_message_size``
#: (section 12.1).
CHANNEL_FLAG_RUNS = 0x1
#: Peer record ``intent_flags`` bit: the intent is one run (section 12.5).
INTENT_FLAG_RUN = 0x1

# GlobalHeader, offsets 0..60.
_HEADER = struct.Struct("<QIIIIQQIIQI")
HEADER_FIELDS = (
    "magic",  # 0
    "version",  # 8
    "max_channels",  # 12
    "channel_count",  # 16
    "reserved",  # 20
    "segment_size",  # 24
    "band_cursor",  # 32
    "creator_pid",  # 40
    "header_flags",  # 44
    "peer_table_offset",  # 48
    "peer_records",  # 56: 0 means PEER_RECORDS (section 11.1)
)
# ChannelEntry, offsets 0..48; max_message_size at 80, tail at 128, head at 256.
_ENTRY = struct.Struct("<IIQQIIIIII")
ENTRY_FIELDS = (
    "channel_id",  # 0
    "flags",  # 4: CHANNEL_FLAG_RUNS
    "capacity",  # 8
    "band_offset",  # 16
    "state",  # 24
    "creator_pid",  # 28
    "not_empty_seq",  # 32
    "not_empty_waiters",  # 36
    "not_full_seq",  # 40
    "not_full_waiters",  # 44
)
ENTRY_MAX_MESSAGE_SIZE = 80
ENTRY_TAIL = 128
ENTRY_HEAD = 256
# Slot: sequence at 0, MessageMeta at 8..48, the run fields at 48..56, payload at 64.
_SLOT = struct.Struct("<QQQIIIHHIIII")
SLOT_FIELDS = (
    "sequence",  # 0
    "message_id",  # 8
    "timestamp_ns",  # 16
    "channel_id",  # 24
    "message_type",  # 28
    "sender_pid",  # 32
    "sender_runtime",  # 36
    "flags",  # 38: FLAG_*
    "payload_len",  # 40: in a run, the whole message's length
    "padding",  # 44
    "run_slots",  # 48: slots of the run (with FLAG_RUN or FLAG_RUN_CONT)
    "run_index",  # 52: this slot's place in its run
)
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

# Peer table (section 11.1): ``peer_records`` records (0: PEER_RECORDS; else up to
# MAX_PEER_RECORDS) of PEER_RECORD_SIZE bytes at ``peer_table_offset``.
PEER_RECORDS = 256
MAX_PEER_RECORDS = 16384
PEER_RECORD_SIZE = 64
PEER_TABLE_SIZE = PEER_RECORDS * PEER_RECORD_SIZE
#: Record ``role`` values.
ROLE_PRODUCER, ROLE_CONSUMER = 1, 2
_PEER = struct.Struct("<IHHQIIQQII")
PEER_FIELDS = (
    "pid",  # 0
    "runtime",  # 4
    "role",  # 6
    "start_time",  # 8
    "channel_id",  # 16
    "intent_count",  # 20
    "intent_position",  # 24
    "pid_ns",  # 32
    "waiting",  # 40: WAITING_* (section 11.9)
    "intent_flags",  # 44: INTENT_FLAG_RUN (section 12.5)
)
#: Record ``waiting`` values: not waiting, blocked receiving, blocked sending.
WAITING_NONE, WAITING_MESSAGE, WAITING_FREE_SLOT = 0, 1, 2

assert _HEADER.size == 60 and _ENTRY.size == 48 and _SLOT.size == 56 and _PEER.size == 48
# Each struct unpacks to exactly as many values as its field tuple names (`zip` below has no
# `strict=` before Python 3.10, so this is checked once here).
assert len(HEADER_FIELDS) == len(_HEADER.unpack(bytes(_HEADER.size)))
assert len(ENTRY_FIELDS) == len(_ENTRY.unpack(bytes(_ENTRY.size)))
assert len(SLOT_FIELDS) == len(_SLOT.unpack(bytes(_SLOT.size)))
assert len(PEER_FIELDS) == len(_PEER.unpack(bytes(_PEER.size)))


def entry_offset(channel: int) -> int:
    """Offset of channel ``channel``'s entry."""
    return CHANNEL_TABLE_OFFSET + channel * CHANNEL_ENTRY_SIZE


def slot_offset(band_offset: int, index: int) -> int:
    """Offset of slot ``index`` of a band."""
    return band_offset + index * SLOT_SIZE


def read_header(data: bytes | bytearray | memoryview) -> dict[str, int] | None:
    """The header fields as stored; None if the data is shorter than 60 bytes."""
    if len(data) < _HEADER.size:
        return None
    return dict(zip(HEADER_FIELDS, _HEADER.unpack_from(data, 0)))


def read_entry(data: bytes | bytearray | memoryview, channel: int) -> dict[str, int] | None:
    """Channel entry ``channel`` as stored (with ``max_message_size``, ``tail`` and
    ``head``); None if too short."""
    offset = entry_offset(channel)
    if len(data) < offset + CHANNEL_ENTRY_SIZE:
        return None
    entry = dict(zip(ENTRY_FIELDS, _ENTRY.unpack_from(data, offset)))
    entry["max_message_size"] = _U32.unpack_from(data, offset + ENTRY_MAX_MESSAGE_SIZE)[0]
    entry["tail"] = _U64.unpack_from(data, offset + ENTRY_TAIL)[0]
    entry["head"] = _U64.unpack_from(data, offset + ENTRY_HEAD)[0]
    return entry


def message_limit(entry: dict[str, int]) -> int:
    """The largest message of a channel (section 12.1): its ``max_message_size`` when its
    flags have CHANNEL_FLAG_RUNS, else one slot's 960."""
    if entry["flags"] & CHANNEL_FLAG_RUNS:
        return entry["max_message_size"]
    return MSG_INLINE


def run_part_len(payload_len: int, run_index: int) -> int:
    """Bytes of a ``payload_len``-byte message in slot ``run_index`` of its run (section
    12.2): 960 for every slot but the last; 0 past the message."""
    return max(0, min(payload_len - MSG_INLINE * run_index, MSG_INLINE))


def read_slot(data: bytes | bytearray | memoryview, offset: int) -> dict[str, object] | None:
    """The slot at ``offset``: sequence, the meta fields, the run fields, and ``payload``:
    the bytes this slot holds -- ``payload_len`` bytes, at most 960; in a slot of a run
    (FLAG_RUN or FLAG_RUN_CONT), its part of the message (see :func:`run_part_len`). None if
    the slot lies past the data."""
    if offset < 0 or len(data) < offset + SLOT_SIZE:
        return None
    values = _SLOT.unpack_from(data, offset)
    slot: dict[str, object] = dict(zip(SLOT_FIELDS, values))
    payload_len = values[SLOT_FIELDS.index("payload_len")]
    if values[SLOT_FIELDS.index("flags")] & (FLAG_RUN | FLAG_RUN_CONT):
        length = run_part_len(payload_len, values[SLOT_FIELDS.index("run_index")])
    else:
        length = min(payload_len, MSG_INLINE)
    start = offset + PAYLOAD_OFFSET
    slot["payload"] = bytes(data[start : start + length])
    return slot


def read_message(
    data: bytes | bytearray | memoryview, channel: int, position: int
) -> dict[str, object] | None:
    """The message at ``position`` of channel ``channel``, as stored: the slot there (see
    :func:`read_slot`) and, when it starts a run, ``payload`` joined from the parts of the
    ``run_slots`` slots from it (each slot's ``payload_len``, ``message_id``, ``run_index``
    and flags are not checked: this decodes, it does not validate) and ``slots``, the slot
    dicts of the run. None if the entry or a slot lies past the data."""
    entry = read_entry(data, channel)
    if entry is None or entry["capacity"] == 0:
        return None
    capacity, band = entry["capacity"], entry["band_offset"]

    def slot_at(p: int) -> dict[str, object] | None:
        return read_slot(data, slot_offset(band, p % capacity))

    first = slot_at(position)
    if first is None:
        return None
    if not cast(int, first["flags"]) & FLAG_RUN:
        return first
    count = min(cast(int, first["run_slots"]), capacity)
    slots = [first]
    for i in range(1, count):
        slot = slot_at(position + i)
        if slot is None:
            return None
        slots.append(slot)
    message = dict(first)
    message["payload"] = b"".join(cast(bytes, s["payload"]) for s in slots)
    message["slots"] = slots
    return message


def peer_record_offset(table_offset: int, index: int) -> int:
    """Offset of record ``index`` of the peer table at ``table_offset``."""
    return table_offset + index * PEER_RECORD_SIZE


def peer_table_records(header: dict[str, int]) -> int | None:
    """Records in the peer table ``header`` names (section 11.1); None for a
    ``peer_records`` no creator may write."""
    count = header["peer_records"]
    if count == 0:
        return PEER_RECORDS
    return count if PEER_RECORDS <= count <= MAX_PEER_RECORDS else None


def read_peers(data: bytes | bytearray | memoryview) -> list[dict[str, int]]:
    """The taken records (``pid != 0``) of the peer table, as stored, each with its
    ``index``; empty when there is no table, its size is invalid or it lies past the data."""
    header = read_header(data)
    if header is None:
        return []
    table = header["peer_table_offset"]
    count = peer_table_records(header)
    if table == 0 or count is None or len(data) < table + count * PEER_RECORD_SIZE:
        return []
    records = []
    for index in range(count):
        values = _PEER.unpack_from(data, peer_record_offset(table, index))
        if values[0] != 0:
            record = dict(zip(PEER_FIELDS, values))
            record["index"] = index
            records.append(record)
    return records
