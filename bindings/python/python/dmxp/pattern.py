"""Verifiable test payloads, byte-identical to the Rust ``dmxp::pattern``.

A payload of ``length`` bytes (``length >= 24``; above 960 it travels as a run of slots,
``docs/PROTOCOL.md`` section 12), little-endian:

========== ===========================================================
bytes      content
========== ===========================================================
0..8       channel id (u64)
8..16      index (u64)
16..len-8  byte ``k`` = ``(channel * 31 + index * 7 + k) mod 256``
len-8..len FNV-1a 64 of bytes ``0..len-8`` (basis 0xcbf29ce484222325,
           prime 0x100000001b3)
========== ===========================================================

Every client (Rust, C, Go, Python) produces and checks the same bytes, so a receiver can tell
a right message from a garbled, misrouted or duplicated one whatever language sent it.

:func:`default_len` gives the examples' lengths; :func:`large_len` those of their ``--large``
run (one slot, its edge, the first run, 64 KiB and the channel's limit), :func:`blob_len`
those of their ``--blob`` run (blobs of up to 4 MiB in the pool :data:`BLOB_CLASSES`). The
checksum is computed by the extension when it is importable (a Python loop takes tens of
milliseconds for a 256 KiB payload); :func:`fnv1a` is the same function in pure Python.
"""

from __future__ import annotations

import struct

__all__ = [
    "BLOB_CLASSES",
    "BLOB_LENS",
    "LARGE_LENS",
    "MAX_LEN",
    "MIN_LEN",
    "PatternError",
    "blob_len",
    "decode",
    "default_len",
    "encode",
    "fnv1a",
    "large_len",
]

#: The shortest pattern payload.
MIN_LEN = 24
#: The longest payload of one slot (a longer one travels as a run; there is no upper bound
#: on a pattern's length).
MAX_LEN = 960
#: The lengths of the ``--large`` run before clamping: ``None`` stands for the limit.
LARGE_LENS = (MIN_LEN, 960, 961, 65536, None)

#: The lengths of the ``--blob`` run (docs/PROTOCOL.md section 13): tiny, a page, just past a
#: 64 KiB block, 1 MiB and 4 MiB.
BLOB_LENS = (MIN_LEN, 4096, 65537, 1 << 20, 4 << 20)
#: The blob pool the examples create with ``--blob`` (the same in every language):
#: ``(block_size, block_count)`` classes for ``Producer(..., blob_classes=BLOB_CLASSES)``.
BLOB_CLASSES = ((64 << 10, 32), (1 << 20, 8), (4 << 20, 6))

_FNV_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_HEAD = struct.Struct("<QQ")
_SUM = struct.Struct("<Q")
# 0, 1, ..., 255 repeated: any run of filler bytes of one slot is one slice of it.
_RAMP = bytes(range(256)) * 5


class PatternError(ValueError):
    """The payload is not a valid pattern. ``reason`` is ``"too_short"``, ``"checksum"`` or
    ``"filler"``; ``at`` is the first wrong filler byte for ``"filler"``."""

    def __init__(self, message: str, reason: str, at: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.at = at


def default_len(index: int) -> int:
    """The length the example programs use for message ``index``: 32 to 144 bytes."""
    return 32 + (index % 8) * 16


def large_len(index: int, limit: int) -> int:
    """The length of message ``index`` of the examples' ``--large`` run on a channel whose
    largest message is ``limit`` bytes: ``[24, 960, 961, 65536, limit][index % 5]``, clamped
    to ``limit`` (as the Rust ``dmxp::pattern::large_len``)."""
    length = LARGE_LENS[index % 5]
    return limit if length is None else min(length, limit)


def blob_len(index: int) -> int:
    """The length of message ``index`` of the examples' ``--blob`` run:
    ``[24, 4096, 65537, 1 MiB, 4 MiB][index % 5]`` (as the Rust ``dmxp::pattern::blob_len``)."""
    return BLOB_LENS[index % 5]


def fnv1a(data: bytes) -> int:
    """FNV-1a 64 of ``data`` (in pure Python)."""
    h = _FNV_BASIS
    prime = _FNV_PRIME
    mask = _MASK64
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return h


try:
    from ._dmxp import pattern_fnv1a as _checksum
except ImportError:  # the pure-Python modules without the extension
    _checksum = fnv1a


def _filler(channel: int, index: int, count: int) -> bytes:
    # Byte k (from 16) is (channel*31 + index*7 + k) mod 256: consecutive values mod 256.
    start = (channel * 31 + index * 7 + 16) & 0xFF
    if start + count <= len(_RAMP):
        return _RAMP[start : start + count]
    ramp = bytes(range(256)) * ((start + count) // 256 + 1)
    return ramp[start : start + count]


def encode(channel: int, index: int, length: int) -> bytes:
    """The payload for (``channel``, ``index``) of ``length`` bytes (at least 24)."""
    length = max(length, MIN_LEN)
    channel &= _MASK64
    index &= _MASK64
    body = _HEAD.pack(channel, index) + _filler(channel, index, length - MIN_LEN)
    return body + _SUM.pack(_checksum(body))


def decode(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Checks a payload and returns its ``(channel, index)``; raises :class:`PatternError`."""
    data = bytes(payload)
    length = len(data)
    if length < MIN_LEN:
        raise PatternError(f"payload of {length} bytes is too short", "too_short")
    body = data[: length - 8]
    if _checksum(body) != _SUM.unpack_from(data, length - 8)[0]:
        raise PatternError("checksum mismatch", "checksum")
    channel, index = _HEAD.unpack_from(data, 0)
    expected = _filler(channel, index, length - MIN_LEN)
    if data[16 : length - 8] != expected:
        at = next(k for k in range(16, length - 8) if data[k] != expected[k - 16])
        raise PatternError(f"filler byte {at} is wrong", "filler", at)
    return channel, index
