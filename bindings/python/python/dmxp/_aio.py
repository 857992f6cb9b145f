"""The asyncio waits behind ``Consumer.receive_async``, ``Consumer.receive_with_meta_async``,
``async for payload in consumer`` and ``Producer.send_async`` (the extension's methods call
the functions here and return their coroutines).

Each wait loops: try the operation without waiting (``_try_receive`` / ``_try_send``); if the
channel is empty (or full), arm the handle's event-loop wait (``_arm_wait``, the io_uring
futex wait of ``docs/PROTOCOL.md`` section 7.4) and wait, in the running loop, until its fd
turns readable (``loop.add_reader``) or its slice (at most 100 ms) or the caller's deadline
passes; then disarm and try again. The fd is level-triggered: it stays readable until the
disarm reaps the completion, so the reader is removed as soon as it fires. No thread waits.

Cancellation (``task.cancel()``, ``asyncio.wait_for``, a closed loop) is safe at any await: the
reader is removed and the wait disarmed in ``finally`` blocks, so the channel's waiter count
goes back to what it was, and nothing is consumed or sent, because a message is taken (or
sent) only by the non-waiting attempt, never by the wait.

Where the kernel has no io_uring futex waits (``_arm_wait`` returns False), or with
``DMXP_ASYNC_POLL=1`` in the environment, or after ``use_async_polling(True)`` on the handle,
a wait polls: it yields to the loop a few times, then re-checks every :data:`POLL_INTERVAL`
seconds (``asyncio.sleep``), without registering as a waiter.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from .errors import ClosedError, DmxpError, FullError, InvalidInputError, TimeoutError

#: Longest sleep of a polling wait (the fallback without io_uring) between two looks at the
#: ring, in seconds.
POLL_INTERVAL = 0.001

#: Looks at the ring a polling wait makes by yielding to the loop (``asyncio.sleep(0)``)
#: before it sleeps :data:`POLL_INTERVAL` between looks.
POLL_YIELDS = 8


def deadline(loop: asyncio.AbstractEventLoop, timeout: Any) -> float | None:
    """The loop time at which a wait of ``timeout`` ends: ``None`` for "do not wait"
    (``timeout`` 0), ``math.inf`` for no deadline (``None``, negative, ``math.inf``)."""
    if timeout is None:
        return math.inf
    if not hasattr(type(timeout), "__float__") and not hasattr(type(timeout), "__index__"):
        kind = type(timeout).__name__
        raise TypeError(f"timeout must be a number of seconds or None, not {kind}")
    seconds = float(timeout)
    if math.isnan(seconds):
        raise InvalidInputError("timeout is NaN")
    if seconds < 0 or math.isinf(seconds):
        return math.inf
    if seconds == 0:
        return None
    return loop.time() + seconds


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, timeout: float) -> None:
    """Returns when ``fd`` is readable or ``timeout`` seconds have passed."""
    future = loop.create_future()

    def wake() -> None:
        # The fd stays readable until the disarm: stop watching it at once.
        loop.remove_reader(fd)
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, wake)
    timer = loop.call_later(max(timeout, 0.0), wake)
    try:
        await future
    finally:
        timer.cancel()
        loop.remove_reader(fd)


async def _until(
    handle: Any,
    loop: asyncio.AbstractEventLoop,
    until: float | None,
    attempt: Callable[[], Any],
    length: Callable[[], int],
) -> Any:
    """``attempt()`` until it returns something other than None, waiting for the handle's
    wake-up between attempts; None once ``until`` has passed (at once when it is None)."""
    result = attempt()
    if result is not None or until is None or loop.time() >= until:
        return result
    size = length()
    handle._wait_begin()
    try:
        readies = 0  # rounds in a row that found the ring ready and still got nothing
        polls = 0
        no_reader = False  # the loop has no add_reader: poll
        while True:
            if no_reader:
                armed = False
            else:
                armed = handle._arm_wait() if size < 0 else handle._arm_wait(size)
            if armed is None:
                # Ready: try again now; yield to the loop if that keeps losing the race.
                readies += 1
                if readies > 1:
                    await asyncio.sleep(0)
            elif armed is False:
                polls += 1
                if polls <= POLL_YIELDS:
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(min(POLL_INTERVAL, max(until - loop.time(), 0.0)))
            else:
                readies = 0
                fd, slice_seconds = armed
                try:
                    await _readable(loop, fd, min(slice_seconds, until - loop.time()))
                except NotImplementedError:
                    no_reader = True
                finally:
                    handle._disarm_wait()
            result = attempt()
            if result is not None or loop.time() >= until:
                return result
    finally:
        handle._wait_end()


async def receive(consumer: Any, timeout: Any, meta: bool) -> Any:
    """``Consumer.receive_async`` (``meta``: ``receive_with_meta_async``)."""
    loop = asyncio.get_running_loop()
    until = deadline(loop, timeout)
    return await _until(consumer, loop, until, lambda: consumer._try_receive(meta), lambda: -1)


async def next_payload(consumer: Any, idle_timeout: float | None) -> bytes:
    """``Consumer.__anext__``: the next payload, waiting up to ``idle_timeout`` (None:
    forever); StopAsyncIteration when none came or the consumer is closed."""
    try:
        payload = await receive(consumer, idle_timeout, False)
    except ClosedError:
        raise StopAsyncIteration from None
    except DmxpError:
        if consumer.closed:  # closed by another thread while this one waited
            raise StopAsyncIteration from None
        raise
    if payload is None:
        raise StopAsyncIteration
    return payload


async def send(producer: Any, data: Any, timeout: Any, message_type: int, flags: int) -> int:
    """``Producer.send_async``."""
    loop = asyncio.get_running_loop()
    until = deadline(loop, timeout)
    payload = data

    def attempt() -> int | None:
        return producer._try_send(payload, message_type, flags)

    def length() -> int:
        # The call waits: from here on it sends a copy of what the caller passed, taken now
        # (as the blocking sends do), unless that is bytes already.
        nonlocal payload
        if not isinstance(payload, bytes):
            payload = bytes(memoryview(payload))
        return len(payload)

    sent = await _until(producer, loop, until, attempt, length)
    if sent is not None:
        return sent
    if until is None:
        raise FullError(f"channel {producer.channel_id} is full")
    raise TimeoutError(f"channel {producer.channel_id}: timed out waiting for a free slot")
