"""dmxp.pattern must be byte-identical to the Rust dmxp::pattern."""

from __future__ import annotations

import random
import struct

import pytest

from dmxp import _dmxp, pattern

VECTORS = [
    (0, 0, 24),
    (0, 0, 32),
    (3, 7, 144),
    (255, 1_000_003, 960),
    (1, 2**63 + 5, 100),
    (2**32 - 1, 2**64 - 1, 57),
]


def test_known_fnv1a_values() -> None:
    # Published FNV-1a 64 test values.
    assert pattern.fnv1a(b"") == 0xCBF29CE484222325
    assert pattern.fnv1a(b"a") == 0xAF63DC4C8601EC8C
    assert pattern.fnv1a(b"foobar") == 0x85944171F73967E8


def test_layout_of_a_payload() -> None:
    payload = pattern.encode(3, 7, 40)
    assert len(payload) == 40
    assert struct.unpack_from("<QQ", payload) == (3, 7)
    assert list(payload[16:32]) == [(3 * 31 + 7 * 7 + k) % 256 for k in range(16, 32)]
    assert struct.unpack_from("<Q", payload, 32)[0] == pattern.fnv1a(payload[:32])


@pytest.mark.parametrize("channel, index, length", VECTORS)
def test_same_bytes_as_rust(channel: int, index: int, length: int) -> None:
    ours = pattern.encode(channel, index, length)
    assert ours == _dmxp.rust_pattern_encode(channel, index, length)
    assert pattern.decode(ours) == (channel, index)
    assert _dmxp.rust_pattern_decode(ours) == (channel, index)


def test_every_length_and_many_indices_match_rust() -> None:
    for length in range(pattern.MIN_LEN, pattern.MAX_LEN + 1):
        assert pattern.encode(9, length * 13, length) == _dmxp.rust_pattern_encode(
            9, length * 13, length
        ), length
    rng = random.Random(1234)
    for _ in range(500):
        channel, index = rng.randrange(256), rng.randrange(2**64)
        length = pattern.default_len(index)
        assert pattern.encode(channel, index, length) == _dmxp.rust_pattern_encode(
            channel, index, length
        )


def test_lengths_below_the_minimum_are_raised_like_rust() -> None:
    for length in (0, 5, 23):
        ours = pattern.encode(1, 2, length)
        assert ours == _dmxp.rust_pattern_encode(1, 2, length)
        assert len(ours) == 24


@pytest.mark.parametrize("length", [961, 1000, 1919, 1920, 1921, 5000, 65536, 70001, 262144])
def test_long_payloads_match_rust(length: int) -> None:
    # Lengths of runs (above one slot): not clamped, the same bytes as Rust's.
    for channel, index in ((0, 0), (7, 3), (255, 2**64 - 1)):
        ours = pattern.encode(channel, index, length)
        assert len(ours) == length
        assert ours == _dmxp.rust_pattern_encode(channel, index, length)
        assert pattern.decode(ours) == (channel, index)
        assert _dmxp.rust_pattern_decode(ours) == (channel, index)


def test_damage_in_a_long_payload_is_detected() -> None:
    good = pattern.encode(2, 9, 70_000)
    for flip in (16, 960, 961, 65_000, 69_991, 69_999):
        bad = bytearray(good)
        bad[flip] ^= 0x01
        with pytest.raises(pattern.PatternError):
            pattern.decode(bad)
    # A wrong filler byte past the first 1,280 (the ramp the short path slices).
    body = bytearray(good[:-8])
    body[50_000] ^= 0xFF
    forged = bytes(body) + struct.pack("<Q", pattern.fnv1a(bytes(body)))
    with pytest.raises(pattern.PatternError) as info:
        pattern.decode(forged)
    assert (info.value.reason, info.value.at) == ("filler", 50_000)


def test_the_checksum_is_fnv1a_either_way() -> None:
    # encode/decode use the extension's FNV-1a; it is the pure-Python one.
    rng = random.Random(77)
    for length in (0, 1, 7, 8, 960, 961, 4099):
        data = bytes(rng.randrange(256) for _ in range(length))
        assert _dmxp.pattern_fnv1a(data) == pattern.fnv1a(data), length
    assert _dmxp.pattern_fnv1a(bytearray(b"foobar")) == 0x85944171F73967E8
    assert _dmxp.pattern_fnv1a(memoryview(b"xfoobarx")[1:-1]) == 0x85944171F73967E8


def test_large_len_matches_rust() -> None:
    assert [pattern.large_len(i, 262_144) for i in range(6)] == [
        24,
        960,
        961,
        65_536,
        262_144,
        24,
    ]
    # Clamped to the limit: a channel of one slot, or one below 64 KiB.
    assert [pattern.large_len(i, 960) for i in range(5)] == [24, 960, 960, 960, 960]
    assert [pattern.large_len(i, 10_000) for i in range(5)] == [24, 960, 961, 10_000, 10_000]
    for limit in (24, 500, 960, 961, 1920, 65_535, 65_536, 65_537, 262_144, 1 << 20):
        for index in list(range(12)) + [2**64 - 1, 2**63]:
            assert pattern.large_len(index, limit) == _dmxp.rust_pattern_large_len(index, limit)


def test_default_len() -> None:
    assert [pattern.default_len(i) for i in range(9)] == [32, 48, 64, 80, 96, 112, 128, 144, 32]


def test_decode_detects_damage() -> None:
    good = pattern.encode(4, 11, 64)
    for flip in (0, 8, 20, 55, 63):
        bad = bytearray(good)
        bad[flip] ^= 0x10
        with pytest.raises(pattern.PatternError):
            pattern.decode(bad)
        with pytest.raises(ValueError):  # and Rust agrees
            _dmxp.rust_pattern_decode(bytes(bad))
    with pytest.raises(pattern.PatternError) as info:
        pattern.decode(good[:23])
    assert info.value.reason == "too_short"
    # A wrong filler byte under a matching checksum: another sender's scheme.
    body = bytearray(good[:-8])
    body[30] ^= 0xFF
    forged = bytes(body) + struct.pack("<Q", pattern.fnv1a(bytes(body)))
    with pytest.raises(pattern.PatternError) as info:
        pattern.decode(forged)
    assert (info.value.reason, info.value.at) == ("filler", 30)
    with pytest.raises(ValueError, match="filler byte 30"):
        _dmxp.rust_pattern_decode(forged)
    # Rust-encoded payloads decode in Python.
    assert pattern.decode(_dmxp.rust_pattern_encode(200, 99, 500)) == (200, 99)
