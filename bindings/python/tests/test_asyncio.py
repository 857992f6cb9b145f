"""asyncio: receive_async, receive_with_meta_async, async for, send_async.

The waits run in the test's event loop with no thread: an io_uring futex wait per handle,
watched with ``loop.add_reader`` (PROTOCOL.md section 7.4), or polling where the kernel has
none (forced here with ``use_async_polling(True)`` and ``DMXP_ASYNC_POLL=1``). No timing is
asserted; the bounds only keep a broken build from hanging the run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

import dmxp

from . import asyncio_peer
from .conftest import SMALL_SEGMENT

LONG = 60.0
PEER = Path(__file__).with_name("asyncio_peer.py")
MODES = ["io_uring", "polling"]


def io_uring_expected() -> bool:
    """True where io_uring futex waits should work: Linux 6.7 or later, io_uring enabled, and
    polling not forced (DMXP_ASYNC_POLL). DMXP_TEST_ALLOW_POLLING=1 accepts polling anyway (a
    seccomp filter, say, that this check cannot see)."""
    if os.environ.get("DMXP_ASYNC_POLL", "") not in ("", "0"):
        return False
    if os.environ.get("DMXP_TEST_ALLOW_POLLING") == "1":
        return False
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    try:
        disabled = Path("/proc/sys/kernel/io_uring_disabled").read_text().strip() != "0"
    except OSError:
        disabled = False
    return (major, minor) >= (6, 7) and not disabled


def check_mode(handle, mode: str) -> None:
    """The waits of `handle` used the mechanism asked for (io_uring where expected)."""
    if mode == "polling":
        assert handle.async_wakeup == "polling"
    elif io_uring_expected():
        assert handle.async_wakeup == "io_uring"
    else:
        assert handle.async_wakeup in ("io_uring", "polling")


def run(coroutine):
    """Runs `coroutine` in a fresh loop, bounded by LONG."""

    async def bounded():
        return await asyncio.wait_for(coroutine, LONG)

    return asyncio.run(bounded())


async def until(predicate, what: str) -> None:
    """Yields to the loop until `predicate()` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LONG
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.001)


def registered(mode: str, count: int = 1) -> int:
    """The waiter count an async wait in `mode` shows: a poller does not register."""
    return count if mode == "io_uring" else 0


@pytest.fixture
def channel(segment: str):
    """A producer and a consumer on channel 0 of a small ring (capacity 4)."""
    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        yield producer, consumer


def set_mode(mode: str, *handles) -> None:
    for handle in handles:
        handle.use_async_polling(mode == "polling")


@pytest.mark.parametrize("mode", MODES)
def test_receive_async_waits_for_a_later_send(channel, mode: str) -> None:
    producer, consumer = channel
    set_mode(mode, consumer)
    assert consumer.async_wakeup == ("polling" if mode == "polling" else None)

    async def main():
        waits, wakeups = dmxp.io_uring_futex_waits(), dmxp.io_uring_futex_wakeups()
        receive = asyncio.ensure_future(consumer.receive_async())  # default: no deadline
        await asyncio.sleep(0)
        assert not receive.done()
        if mode == "io_uring":
            await until(lambda: consumer.waiters == (1, 0), "the receive is armed")
        producer.send(b"later")
        assert await receive == b"later"
        assert consumer.waiters == (0, 0)
        check_mode(consumer, mode)
        if consumer.async_wakeup == "io_uring":
            assert dmxp.io_uring_futex_waits() > waits
            assert dmxp.io_uring_futex_wakeups() > wakeups  # the send's wake completed it
        else:
            assert dmxp.io_uring_futex_waits() == waits  # polling never arms

    run(main())


def test_receive_async_takes_a_ready_message_without_waiting(channel) -> None:
    producer, consumer = channel
    producer.send(b"ready")

    async def main():
        waits = dmxp.io_uring_futex_waits()
        assert await consumer.receive_async() == b"ready"
        assert await consumer.receive_async(0) is None
        assert dmxp.io_uring_futex_waits() == waits
        assert consumer.async_wakeup is None  # no wait was needed

    run(main())


def test_receive_with_meta_async(channel) -> None:
    producer, consumer = channel

    async def main():
        receive = asyncio.ensure_future(consumer.receive_with_meta_async(LONG))
        await asyncio.sleep(0)
        producer.send_with(b"typed", message_type=7, flags=0x0100)
        message = await receive
        assert isinstance(message, dmxp.Message)
        assert (message.payload, message.message_type, message.flags) == (b"typed", 7, 0x0100)
        assert message.sender_runtime == dmxp.RUNTIME_PYTHON
        assert await consumer.receive_with_meta_async(0) is None

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_timeouts_follow_the_convention(channel, mode: str) -> None:
    producer, consumer = channel
    set_mode(mode, producer, consumer)

    async def main():
        assert await consumer.receive_async(0) is None  # 0: no wait
        assert await consumer.receive_async(0.02) is None  # nothing came in time
        assert await consumer.receive_with_meta_async(0.02) is None
        assert consumer.waiters == (0, 0)
        for i in range(4):
            producer.send(b"%d" % i)
        with pytest.raises(dmxp.FullError):
            await producer.send_async(b"full", 0)  # 0: no wait, as send() does
        with pytest.raises(dmxp.TimeoutError) as raised:
            await producer.send_async(b"full", 0.02)
        assert isinstance(raised.value, TimeoutError)  # also the builtin
        assert producer.waiters == (0, 0)
        with pytest.raises(dmxp.InvalidInputError):
            await consumer.receive_async(float("nan"))
        with pytest.raises(dmxp.InvalidInputError):
            await producer.send_async(b"x", float("nan"))
        with pytest.raises(TypeError):
            await consumer.receive_async("1")
        # None, negative and infinite timeouts mean no deadline.
        for forever in (None, dmxp.FOREVER, math.inf):
            send = asyncio.ensure_future(producer.send_async(b"f", forever))
            await asyncio.sleep(0.01)
            assert not send.done()  # the ring is still full: it waits
            assert consumer.receive() is not None
            await send
        assert len(consumer.receive_batch(8)) == 4
        for forever in (None, dmxp.FOREVER, math.inf):
            receive = asyncio.ensure_future(consumer.receive_async(forever))
            await asyncio.sleep(0.01)
            assert not receive.done()  # nothing there yet: it waits
            producer.send(b"r")
            assert await receive == b"r"
        assert (producer.waiters, consumer.waiters) == ((0, 0), (0, 0))

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_cancelled_receive_consumes_nothing(channel, mode: str) -> None:
    producer, consumer = channel
    set_mode(mode, consumer)

    async def main():
        receive = asyncio.ensure_future(consumer.receive_async())
        await asyncio.sleep(0)
        await until(lambda: consumer.waiters == (registered(mode), 0), "the receive waits")
        receive.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receive
        assert consumer.waiters == (0, 0)
        # Cancelled by a timeout of the caller's own (wait_for cancels the inner wait).
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(consumer.receive_async(), 0.02)
        assert consumer.waiters == (0, 0)
        producer.send(b"kept")
        assert consumer.receive() == b"kept"  # nobody took it
        # The handle waits again after a cancellation.
        receive = asyncio.ensure_future(consumer.receive_async(LONG))
        await asyncio.sleep(0)
        producer.send(b"next")
        assert await receive == b"next"
        assert consumer.waiters == (0, 0)

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_cancelled_send_sends_nothing(channel, mode: str) -> None:
    producer, consumer = channel
    set_mode(mode, producer)

    async def main():
        for i in range(4):
            producer.send(b"%d" % i)
        send = asyncio.ensure_future(producer.send_async(b"cancelled"))
        await asyncio.sleep(0)
        await until(lambda: producer.waiters == (0, registered(mode)), "the send waits")
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        assert producer.waiters == (0, 0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(producer.send_async(b"timed out"), 0.02)
        assert producer.waiters == (0, 0)
        assert consumer.receive_batch(8) == [b"0", b"1", b"2", b"3"]
        assert consumer.receive() is None  # neither cancelled send went out
        # A pending send completes when a slot frees up.
        for i in range(4):
            producer.send(b"%d" % i)
        send = asyncio.ensure_future(producer.send_async(bytearray(b"waited"), LONG))
        await asyncio.sleep(0)
        assert consumer.receive() == b"0"
        assert await send == 8
        assert consumer.receive_batch(8) == [b"1", b"2", b"3", b"waited"]
        check_mode(producer, mode)

    run(main())


def test_send_async_of_a_run_waits_for_all_its_slots(segment: str) -> None:
    with (
        dmxp.Producer(
            0, capacity=4, segment=segment, size=SMALL_SEGMENT, max_message_size=4 * 960
        ) as producer,
        dmxp.Consumer(0, segment=segment) as consumer,
    ):
        long = bytes(range(256)) * 12  # 3,072 bytes: a run of 4 slots

        async def main():
            producer.send(b"a")
            producer.send(b"b")
            send = asyncio.ensure_future(producer.send_async(long, LONG, message_type=3))
            await asyncio.sleep(0.02)
            assert not send.done()  # 2 of 4 slots are free
            assert consumer.receive() == b"a"
            await asyncio.sleep(0.02)
            assert not send.done()  # 3 of 4
            assert consumer.receive() == b"b"
            assert await send == 2
            message = consumer.receive_with_meta()
            assert (message.payload, message.message_type) == (long, 3)

        run(main())


def test_async_for_stops_after_idle_timeout_and_on_close(segment: str) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as producer:

        async def main():
            with dmxp.Consumer(0, segment=segment, idle_timeout=0.05) as consumer:
                producer.send(b"one")
                producer.send(b"two")
                assert [payload async for payload in consumer] == [b"one", b"two"]
            # No idle timeout: iterates until closed, from the loop or from another thread.
            for closer in ("task", "thread"):
                consumer = dmxp.Consumer(0, segment=segment)
                got = []

                async def iterate(consumer=consumer, got=got):
                    async for payload in consumer:
                        got.append(payload)

                task = asyncio.ensure_future(iterate())
                producer.send(b"x")
                await until(lambda got=got: got == [b"x"], "the message arrived")
                if closer == "task":
                    consumer.close()
                else:
                    thread = threading.Thread(target=consumer.close)
                    thread.start()
                    thread.join(LONG)
                await task  # ends within a slice (100 ms) of the close
                assert got == [b"x"]
                with pytest.raises(dmxp.ClosedError):
                    await consumer.receive_async()

        run(main())


def test_close_ends_a_pending_receive_async(channel) -> None:
    _, consumer = channel

    async def main():
        receive = asyncio.ensure_future(consumer.receive_async())
        await asyncio.sleep(0.01)
        consumer.close()
        with pytest.raises(dmxp.ClosedError):
            await receive

    run(main())


def test_one_async_wait_per_handle(channel, segment: str) -> None:
    producer, consumer = channel

    async def main():
        first = asyncio.ensure_future(consumer.receive_async())
        await asyncio.sleep(0)
        with pytest.raises(dmxp.BusyError, match="one async wait per handle"):
            await consumer.receive_async()
        with pytest.raises(dmxp.BusyError):
            await consumer.__anext__()
        # A receive that does not have to wait is fine meanwhile, and so are other handles.
        assert await consumer.receive_async(0) is None
        with dmxp.Consumer(0, segment=segment) as other:
            second = asyncio.ensure_future(other.receive_async())
            await asyncio.sleep(0)
            producer.send(b"1")
            producer.send(b"2")
            assert sorted(await asyncio.gather(first, second)) == [b"1", b"2"]
        assert consumer.waiters == (0, 0)
        # Free again once the first wait ended.
        receive = asyncio.ensure_future(consumer.receive_async())
        await asyncio.sleep(0)
        producer.send(b"3")
        assert await receive == b"3"

    run(main())


def test_polling_from_the_environment(segment: str) -> None:
    """DMXP_ASYNC_POLL=1 (read once per process) makes every async wait poll."""
    script = f"""
import asyncio, dmxp
async def main():
    with dmxp.Producer(0, capacity=4, segment={segment!r}) as p, \\
         dmxp.Consumer(0, segment={segment!r}) as c:
        receive = asyncio.ensure_future(c.receive_async())
        await asyncio.sleep(0.01)
        assert c.waiters == (0, 0), c.waiters  # a poller does not register
        p.send(b"polled")
        assert await receive == b"polled"
        print(c.async_wakeup, dmxp.io_uring_futex_waits())
asyncio.run(main())
"""
    env = {**os.environ, "DMXP_ASYNC_POLL": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=LONG
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["polling", "0"]


def peer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PEER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=LONG)
    assert process.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def test_one_loop_serves_64_channels_fed_by_producer_processes(segment: str) -> None:
    channels, processes, total, capacity = 64, 4, 100_000, 16
    plan = asyncio_peer.plan(processes, channels, total)
    assert sum(plan.values()) == total
    for c in range(channels):
        dmxp.Producer(
            c, capacity=capacity, segment=segment, size=16 << 20, peer_records=1024
        ).close()
    consumers = [dmxp.Consumer(c, segment=segment) for c in range(channels)]
    expected = defaultdict(int)
    for (_, c), n in plan.items():
        expected[c] += n
    got: dict[int, dict[int, list[int]]] = {c: defaultdict(list) for c in range(channels)}

    async def drain(c: int) -> None:
        consumer = consumers[c]
        for _ in range(expected[c]):
            payload = await consumer.receive_async(LONG)
            assert payload is not None, f"channel {c}: nothing came"
            process, index = payload.split(b":")
            got[c][int(process)].append(int(index))

    async def main():
        wakeups = dmxp.io_uring_futex_wakeups()
        producers = [
            peer("produce", segment, str(p), str(processes), str(channels), str(total))
            for p in range(processes)
        ]
        try:
            await asyncio.gather(*(drain(c) for c in range(channels)))
        finally:
            reports = [finish(p) for p in producers]
        assert sum(r["sent"] for r in reports) == total
        return dmxp.io_uring_futex_wakeups() - wakeups, reports

    try:
        woken, reports = run(main())
        for (p, c), n in plan.items():
            assert got[c][p] == list(range(n)), f"channel {c}, process {p}: out of order or lost"
        for consumer in consumers:
            assert consumer.receive() is None  # exactly once: nothing left over
            assert consumer.waiters == (0, 0)
        if io_uring_expected():
            assert all(c.async_wakeup in (None, "io_uring") for c in consumers)
            assert woken > 0
    finally:
        for consumer in consumers:
            consumer.close()


@pytest.mark.parametrize("child", ["io_uring", "polling"])
def test_ping_pong_across_processes(make_segment, child: str) -> None:
    segment = make_segment("pingpong")
    rounds = 2000 if child == "io_uring" else 300
    env = {**os.environ}
    env.pop("DMXP_ASYNC_POLL", None)
    if child == "polling":
        env["DMXP_ASYNC_POLL"] = "1"
    with (
        dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as pings,
        dmxp.Producer(1, capacity=4, segment=segment, size=SMALL_SEGMENT),
        dmxp.Consumer(1, segment=segment) as pongs,
    ):
        other = peer("pong", segment, str(rounds), env=env)
        try:
            assert other.stdout is not None
            assert other.stdout.readline().strip() == "ready"

            async def main():
                waits, wakeups = dmxp.io_uring_futex_waits(), dmxp.io_uring_futex_wakeups()
                for i in range(rounds):
                    ping = b"%d" % i
                    await pings.send_async(ping, LONG)
                    assert await pongs.receive_async(LONG) == b"pong " + ping
                return dmxp.io_uring_futex_waits() - waits, dmxp.io_uring_futex_wakeups() - wakeups

            waits, wakeups = run(main())
        finally:
            report = finish(other)
        assert report["rounds"] == rounds
        assert report["waiters"] == [0, 0]
        assert pongs.waiters == (0, 0)
        if child == "polling":
            assert report["mode"] == "polling"
            assert report["io_uring_futex_waits"] == 0
        if io_uring_expected():
            assert pongs.async_wakeup == "io_uring"
            # Real wake-ups: the other process's send completed this one's futex waits.
            assert waits > 0 and wakeups > 0
            if child == "io_uring":
                assert report["mode"] == "io_uring"
                assert report["io_uring_futex_wakeups"] > 0


def test_fork_leaves_the_parents_ring_alone(channel, segment: str) -> None:
    """A child forked while the parent's ring holds a parked futex wait (left by a cancelled
    receive) lets go of its copy when it closes the inherited handle, and waits on a ring of
    its own; the parent's ring goes on working."""
    producer, consumer = channel

    async def parent_round(payload: bytes) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(consumer.receive_async(), 0.02)  # parks a wait
        receive = asyncio.ensure_future(consumer.receive_async(LONG))
        await asyncio.sleep(0)
        producer.send(payload)
        assert await receive == payload
        assert consumer.waiters == (0, 0)

    run(parent_round(b"before"))
    with pytest.raises(asyncio.TimeoutError):
        run(asyncio.wait_for(consumer.receive_async(), 0.02))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            consumer.close()  # the inherited handle: its ring copy and wait are the parent's
            with dmxp.Consumer(0, segment=segment) as mine:
                got = asyncio.run(asyncio.wait_for(mine.receive_async(), LONG))
                code = 0 if got == b"to the child" else 2
        finally:
            os._exit(code)
    try:

        async def feed_child() -> None:
            if consumer.async_wakeup == "io_uring":
                await until(lambda: consumer.waiters == (1, 0), "the child waits")
            else:
                await asyncio.sleep(0.05)
            producer.send(b"to the child")

        run(feed_child())
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert consumer.waiters == (0, 0)
    run(parent_round(b"after"))
