"""One timeout convention for every call, as in Python's standard library: ``timeout=None``
waits without a deadline, ``0`` does not wait, a positive number waits up to that long, and a
negative number (``dmxp.FOREVER``) or ``math.inf`` waits forever too. The calls that do not
wait by default (``receive()``, ``send_with()``, ``send_batch()``...) default to 0.

"None waits" is shown by a call that returns only after another thread sent (or received)
something once the call had registered as a waiter; the bounds only keep a broken build from
hanging the run.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

import dmxp

from .conftest import SMALL_SEGMENT

LONG = 30.0
FOREVERS = [None, dmxp.FOREVER, -0.5, math.inf]


@pytest.fixture
def pair(segment: str):
    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        yield producer, consumer


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + LONG
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def in_thread(call):
    """Starts `call` in a thread; returns a function that joins it and returns its result
    (or raises what it raised)."""
    out: list = []

    def target() -> None:
        try:
            out.append(("ok", call()))
        except BaseException as e:  # re-raised in the test's thread
            out.append(("err", e))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join():
        thread.join(LONG)
        assert not thread.is_alive(), "the call never returned"
        kind, value = out[0]
        if kind == "err":
            raise value
        return value

    return join


def payload_of(got):
    """The payload a receive returned: bytes, a Message, or the first of a batch (None or an
    empty batch: nothing)."""
    if isinstance(got, list):
        got = got[0] if got else None
    return got.payload if isinstance(got, dmxp.Message) else got


def receive_into(consumer: dmxp.Consumer, **timeout):
    buffer = bytearray(64)
    length = consumer.receive_into(buffer, **timeout)
    return None if length is None else bytes(buffer[:length])


# Each receive, given `timeout=t` or (with no argument) its default.
RECEIVES = {
    "receive": lambda c, **t: payload_of(c.receive(**t)),
    "receive_with_meta": lambda c, **t: payload_of(c.receive_with_meta(**t)),
    "receive_into": receive_into,
    "receive_batch": lambda c, **t: payload_of(c.receive_batch(4, **t)),
    "receive_batch_with_meta": lambda c, **t: payload_of(c.receive_batch_with_meta(4, **t)),
}


@pytest.mark.parametrize("how", sorted(RECEIVES))
def test_receives_do_not_wait_by_default_nor_with_zero(pair, how: str) -> None:
    _, consumer = pair
    assert RECEIVES[how](consumer) is None
    assert RECEIVES[how](consumer, timeout=0) is None
    assert RECEIVES[how](consumer, timeout=0.0) is None
    assert consumer.waiters == (0, 0)


@pytest.mark.parametrize("forever", FOREVERS, ids=repr)
@pytest.mark.parametrize("how", sorted(RECEIVES))
def test_receives_wait_without_a_deadline_for_none_and_negative(pair, how, forever) -> None:
    producer, consumer = pair
    join = in_thread(lambda: RECEIVES[how](consumer, timeout=forever))
    # Sent only once the receive sleeps as a registered waiter: it must have waited.
    wait_until(lambda: consumer.waiters == (1, 0), "the receive waits")
    producer.send(b"sent later")
    assert join() == b"sent later"
    assert consumer.waiters == (0, 0)


@pytest.mark.parametrize("how", sorted(RECEIVES))
def test_receives_wait_up_to_a_positive_timeout(pair, how: str) -> None:
    producer, consumer = pair
    assert RECEIVES[how](consumer, timeout=0.02) is None
    join = in_thread(lambda: RECEIVES[how](consumer, timeout=LONG))
    wait_until(lambda: consumer.waiters == (1, 0), "the receive waits")
    producer.send(b"in time")
    assert join() == b"in time"


def fill(producer: dmxp.Producer) -> None:
    while producer.try_send(b"fill") is not None:
        pass


SENDS = {
    "send_with": lambda p, t: p.send_with(b"x", timeout=t),
    "send_timeout": lambda p, t: p.send_timeout(b"x", t),
    "send_batch": lambda p, t: p.send_batch([b"x"], timeout=t),
    "send_all": lambda p, t: p.send_all([b"x"], timeout=t),
}


def test_sends_do_not_wait_by_default_nor_with_zero(pair) -> None:
    producer, consumer = pair
    fill(producer)
    with pytest.raises(dmxp.FullError):
        producer.send_with(b"x")
    assert producer.send_batch([b"x"]) == 0
    for t in (0, 0.0):
        with pytest.raises(dmxp.FullError):
            producer.send_with(b"x", timeout=t)
        with pytest.raises(dmxp.FullError):
            producer.send_timeout(b"x", t)  # 0 does not wait: as send() does
        assert producer.send_batch([b"x"], timeout=t) == 0
        with pytest.raises(dmxp.TimeoutError, match="after sending 0 of 1"):
            producer.send_all([b"x"], timeout=t)
    assert producer.waiters == (0, 0)
    assert consumer.receive_batch(8) == [b"fill"] * 4  # nothing else went out


@pytest.mark.parametrize("how", sorted(SENDS))
def test_sends_raise_timeout_error_after_a_positive_timeout(pair, how: str) -> None:
    producer, consumer = pair
    fill(producer)
    with pytest.raises(dmxp.TimeoutError):
        SENDS[how](producer, 0.02)
    assert consumer.receive_batch(8) == [b"fill"] * 4


@pytest.mark.parametrize("forever", FOREVERS, ids=repr)
@pytest.mark.parametrize("how", sorted(SENDS))
def test_sends_wait_without_a_deadline_for_none_and_negative(pair, how, forever) -> None:
    producer, consumer = pair
    fill(producer)
    join = in_thread(lambda: SENDS[how](producer, forever))
    # A slot is freed only once the send sleeps as a registered waiter: it must have waited.
    wait_until(lambda: producer.waiters == (0, 1), "the send waits")
    assert consumer.receive() == b"fill"
    join()
    assert consumer.receive_batch(8) == [b"fill"] * 3 + [b"x"]
    assert producer.waiters == (0, 0)


def test_send_all_waits_without_a_deadline_by_default(pair) -> None:
    producer, consumer = pair
    fill(producer)
    join = in_thread(lambda: producer.send_all([b"x", b"y"]))
    wait_until(lambda: producer.waiters == (0, 1), "send_all waits")
    assert consumer.receive_batch(8) == [b"fill"] * 4
    assert join() == 2
    assert consumer.receive_batch(8) == [b"x", b"y"]


def test_nan_is_refused_everywhere(pair) -> None:
    producer, consumer = pair
    nan = float("nan")
    for call in (
        lambda: consumer.receive(nan),
        lambda: consumer.receive_with_meta(nan),
        lambda: consumer.receive_into(bytearray(8), nan),
        lambda: consumer.receive_batch(4, nan),
        lambda: producer.send_with(b"x", timeout=nan),
        lambda: producer.send_timeout(b"x", nan),
        lambda: producer.send_batch([b"x"], nan),
        lambda: producer.send_all([b"x"], nan),
    ):
        with pytest.raises(dmxp.InvalidInputError, match="NaN"):
            call()


def test_constructor_limits_take_none_for_no_limit(make_segment) -> None:
    """``Consumer(wait=None)`` retries until the channel exists; ``timeout=None`` is accepted
    by both constructors as "no limit"."""
    name = make_segment("later")
    join = in_thread(lambda: dmxp.Consumer(0, segment=name, wait=None, timeout=None))
    time.sleep(0.05)  # the consumer is retrying meanwhile (no timing is asserted)
    with dmxp.Producer(0, capacity=4, segment=name, size=SMALL_SEGMENT, timeout=None) as p:
        consumer = join()
        p.send(b"found")
        assert consumer.receive(None) == b"found"
        consumer.close()
