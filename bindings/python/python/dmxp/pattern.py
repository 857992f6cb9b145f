"""Verifiable test payloads, byte-identical to the Rust ``dmxp::pattern``.

A payload of ``length`` bytes (24 <= length <= 960), little-endian:

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
"""

from __future__ import annotations

import struct

__all__ = ["MIN_LEN", "MAX_LEN", "PatternError", "default_len", "encode", "decode", "fnv1a"]

#: The shortest pattern payload.
MIN_LEN = 24
#: The longest (a slot's payload area).
MAX_LEN = 960

_FNV_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1
_HEAD = struct.Struct("<QQ")
_SUM = struct.Struct("<Q")
# 0, 1, ..., 255 repeated: any run of filler bytes is one slice of it.
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


def fnv1a(data: bytes) -> int:
    """FNV-1a 64 of ``data``."""
    h = _FNV_BASIS
    prime = _FNV_PRIME
    mask = _MASK64
    for byte in data:
        h = ((h ^ byte) * prime) & mask
    return h


def _filler(channel: int, index: int, count: int) -> bytes:
    # Byte k (from 16) is (channel*31 + index*7 + k) mod 256: consecutive values mod 256.
    start = (channel * 31 + index * 7 + 16) & 0xFF
    return _RAMP[start : start + count]


def encode(channel: int, index: int, length: int) -> bytes:
    """The payload for (``channel``, ``index``) of ``length`` bytes (clamped to 24..960)."""
    length = min(max(length, MIN_LEN), MAX_LEN)
    channel &= _MASK64
    index &= _MASK64
    body = _HEAD.pack(channel, index) + _filler(channel, index, length - MIN_LEN)
    return body + _SUM.pack(fnv1a(body))


def decode(payload: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Checks a payload and returns its ``(channel, index)``; raises :class:`PatternError`."""
    data = bytes(payload)
    length = len(data)
    if length < MIN_LEN:
        raise PatternError(f"payload of {length} bytes is too short", "too_short")
    body = data[: length - 8]
    if fnv1a(body) != _SUM.unpack_from(data, length - 8)[0]:
        raise PatternError("checksum mismatch", "checksum")
    channel, index = _HEAD.unpack_from(data, 0)
    expected = _filler(channel, index, length - MIN_LEN)
    if data[16 : length - 8] != expected:
        at = next(k for k in range(16, length - 8) if data[k] != expected[k - 16])
        raise PatternError(f"filler byte {at} is wrong", "filler", at)
    return channel, index
