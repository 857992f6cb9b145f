"""The other process of tests/test_asyncio.py (run as a script; not a test module).

    asyncio_peer.py produce SEGMENT PROCESS PROCESSES CHANNELS TOTAL
        sends this process's share of the plan (``plan``) with ``send_async``, one coroutine
        and one producer per channel, all in one asyncio loop; payload: ``process:index``.
    asyncio_peer.py pong SEGMENT ROUNDS
        receives ROUNDS pings on channel 0 with ``receive_async`` and answers each on
        channel 1 with ``send_async``.

Each prints one JSON line at the end: what it did and its io_uring counters.
"""

from __future__ import annotations

import asyncio
import json
import sys

import dmxp

# Bounds that only keep a broken build from hanging the run.
LONG = 60.0


def plan(processes: int, channels: int, total: int) -> dict[tuple[int, int], int]:
    """{(process, channel): messages}: every process sends on every channel of its parity
    (two processes or more per channel when ``processes`` >= 4), ``total`` messages in all."""
    pairs = [(p, c) for p in range(processes) for c in range(channels) if c % 2 == p % 2]
    share, extra = divmod(total, len(pairs))
    return {pair: share + (i < extra) for i, pair in enumerate(pairs)}


def counters() -> dict[str, int]:
    return {
        "io_uring_futex_waits": dmxp.io_uring_futex_waits(),
        "io_uring_futex_wakeups": dmxp.io_uring_futex_wakeups(),
    }


async def produce(segment: str, process: int, processes: int, channels: int, total: int) -> None:
    mine = {c: n for (p, c), n in plan(processes, channels, total).items() if p == process}
    producers = {c: dmxp.Producer(c, segment=segment) for c in mine}

    async def send_all(channel: int, count: int) -> None:
        producer = producers[channel]
        for index in range(count):
            await producer.send_async(b"%d:%d" % (process, index), timeout=LONG)

    await asyncio.gather(*(send_all(c, n) for c, n in mine.items()))
    modes = sorted({str(p.async_wakeup) for p in producers.values()})
    for producer in producers.values():
        producer.close()
    print(json.dumps({"sent": sum(mine.values()), "modes": modes, **counters()}), flush=True)


async def pong(segment: str, rounds: int) -> None:
    with (
        dmxp.Consumer(0, segment=segment, wait=LONG) as pings,
        dmxp.Producer(1, segment=segment) as pongs,
    ):
        print("ready", flush=True)
        for _ in range(rounds):
            ping = await pings.receive_async(timeout=LONG)
            assert ping is not None, "no ping came"
            await pongs.send_async(b"pong " + ping, timeout=LONG)
        mode = pings.async_wakeup
        waiters = pings.waiters
    print(json.dumps({"rounds": rounds, "mode": mode, "waiters": waiters, **counters()}))


def main(argv: list[str]) -> None:
    if argv[0] == "produce":
        segment, process, processes, channels, total = argv[1:]
        asyncio.run(produce(segment, int(process), int(processes), int(channels), int(total)))
    elif argv[0] == "pong":
        asyncio.run(pong(argv[1], int(argv[2])))
    else:
        raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
