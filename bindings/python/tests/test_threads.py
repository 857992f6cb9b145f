"""Blocking calls release the GIL, wake across threads, and stay interruptible."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import dmxp

from .conftest import SMALL_SEGMENT

# Generous bounds: they only keep a broken build from hanging the run.
LONG = 30.0


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + LONG
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def test_blocked_receive_lets_other_threads_run(segment: str) -> None:
    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        got: list[bytes | None] = []
        receiver = threading.Thread(target=lambda: got.append(consumer.receive(timeout=LONG)))
        receiver.start()
        # This thread runs Python code while the receiver sleeps in the extension: it sees the
        # receiver registered as a waiter on the channel, then sends. Were the GIL held during
        # the wait, this loop could not run until the receive returned None after LONG.
        wait_until(lambda: consumer.info()["receivers_waiting"] == 1, "the receiver sleeps")
        wakes = dmxp.futex_wake_calls()
        producer.send(b"wake up")
        receiver.join(LONG)
        assert got == [b"wake up"]
        assert dmxp.futex_wake_calls() > wakes  # a waiter was registered: the send woke it
        assert consumer.info()["receivers_waiting"] == 0


@pytest.mark.parametrize("how", ["forever", "blocking", "iteration", "into", "batch"])
def test_every_blocking_receive_wakes(segment: str, how: str) -> None:
    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment, idle_timeout=LONG) as consumer,
    ):
        buffer = bytearray(16)
        calls = {
            "forever": lambda: consumer.receive(timeout=dmxp.FOREVER),
            "blocking": consumer.receive_blocking,
            "iteration": lambda: next(iter(consumer)),
            "into": lambda: bytes(buffer[: consumer.receive_into(buffer, timeout=-1)]),
            "batch": lambda: consumer.receive_batch(4, timeout=LONG)[0],
        }
        got: list[bytes] = []
        receiver = threading.Thread(target=lambda: got.append(calls[how]()))
        receiver.start()
        wait_until(lambda: consumer.info()["receivers_waiting"] == 1, "the receiver sleeps")
        producer.send(b"payload")
        receiver.join(LONG)
        assert got == [b"payload"]


def test_blocked_send_lets_other_threads_run(segment: str) -> None:
    with (
        dmxp.Producer(0, capacity=2, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        producer.send(b"1")
        producer.send(b"2")
        sent: list[int] = []
        sender = threading.Thread(target=lambda: sent.append(producer.send_timeout(b"3", LONG)))
        sender.start()
        wait_until(lambda: producer.info()["senders_waiting"] == 1, "the sender sleeps")
        assert consumer.receive() == b"1"
        sender.join(LONG)
        assert sent == [2]
        assert consumer.receive_batch(4) == [b"2", b"3"]


def test_signals_interrupt_a_receive_without_deadline(segment: str) -> None:
    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT),
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        previous = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(Interrupted):
                consumer.receive(timeout=dmxp.FOREVER)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        # The interrupted wait unregistered itself.
        assert consumer.info()["receivers_waiting"] == 0


def test_close_from_another_thread_ends_a_blocked_iteration(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:
        consumer = dmxp.Consumer(0, segment=segment)  # no idle_timeout: iterates forever
        got: list[bytes] = []
        iterating = threading.Thread(target=lambda: got.extend(consumer))
        iterating.start()
        producer.send(b"one")
        producer.send(b"two")
        wait_until(lambda: len(got) == 2, "both messages arrived")
        wait_until(lambda: consumer.info()["receivers_waiting"] == 1, "the iteration sleeps")
        consumer.close()
        iterating.join(LONG)
        assert not iterating.is_alive()
        assert got == [b"one", b"two"]


def test_close_from_another_thread_interrupts_a_blocked_receive(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT):
        consumer = dmxp.Consumer(0, segment=segment)
        errors: list[BaseException] = []

        def receive() -> None:
            try:
                consumer.receive(timeout=dmxp.FOREVER)
            except BaseException as e:
                errors.append(e)

        receiver = threading.Thread(target=receive)
        receiver.start()
        wait_until(lambda: consumer.info()["receivers_waiting"] == 1, "the receiver sleeps")
        consumer.close()
        receiver.join(LONG)
        assert len(errors) == 1 and isinstance(errors[0], dmxp.ClosedError)
