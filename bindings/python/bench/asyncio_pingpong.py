#!/usr/bin/env python3
"""One end of the ``asyncio`` arm of ``dmxp-bench async``: a ping-pong whose ends each wait
from an asyncio event loop (``await consumer.receive_async()``, ``await
producer.send_async(...)``).

    python bench/asyncio_pingpong.py --role ping|pong --segment NAME [options]

The Rust harness (``dmxp-bench async``, ``dmxp-bench/src/python_asyncio.rs``) creates the
segment and its two channels (``--channel`` and ``--channel + 1``, the same rings as its
``dmxp-async`` arm), starts one process per end with this script, and drives them over
stdin/stdout, one line each way:

1. the process pins itself to ``--cpu``, opens its producer and consumer and prints ``ready``;
2. it waits for a ``go`` line on stdin;
3. the ping ``send_async``s a ``--payload``-byte message (its first 8 bytes the round-trip
   number, as the Rust pings stamp theirs) and awaits ``receive_async`` for the answer, until
   ``--messages`` round trips are made, or ``--seconds`` have passed since the go, or it holds
   ``--warmup + --max-samples`` round trips; it then sends a 1-byte message, which stops the
   pong. The pong awaits ``receive_async`` and ``send_async``s a ``--payload``-byte answer;
4. each prints one JSON line: round trips (ping) or answers (pong), CLOCK_MONOTONIC start and
   end, and this process's counters of futex wakes and ``io_uring`` futex waits.

The ping reads CLOCK_MONOTONIC once per round trip (``time.monotonic_ns``, as the Rust pings
read theirs once per round trip) and writes the readings, the first taken at the go, to
``--stamps`` as little-endian int64s. The harness turns them into round-trip times and
percentiles exactly as it does a Rust ping's (the first ``--warmup`` dropped): so the times
include everything the interpreter does per round trip (the event loop, the coroutines of
``dmxp._aio``, the calls into the extension, creating the received ``bytes``).

Not meant to be run by hand: run ``dmxp-bench async --python PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from array import array

import dmxp

#: The length of the message that tells the pong to stop (real payloads are at least 8 bytes).
STOP_LEN = 1


def wait_for_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"asyncio_pingpong: expected 'go' on stdin, got {line!r}")


def counters() -> tuple[int, int, int]:
    return dmxp.futex_wake_calls(), dmxp.io_uring_futex_waits(), dmxp.io_uring_futex_wakeups()


def result(
    rounds: int, begin: int, end: int, before: tuple, after: tuple, consumer: dmxp.Consumer
) -> dict:
    """What one end reports: its round trips, its span and the wake-ups it made."""
    return {
        "messages": rounds,
        "start_ns": begin,
        "end_ns": end,
        "futex_wake": after[0] - before[0],
        "io_uring_waits": after[1] - before[1],
        "io_uring_wakeups": after[2] - before[2],
        "async_wakeup": consumer.async_wakeup,
    }


async def ping(args: argparse.Namespace) -> dict:
    producer = dmxp.Producer(
        args.channel, capacity=args.capacity, segment=args.segment, size=args.size
    )
    consumer = dmxp.Consumer(args.channel + 1, segment=args.segment)
    payload = bytearray(b"\x5a" * args.payload)
    stamp = struct.Struct("<Q").pack_into
    quota = args.warmup + args.max_samples
    if args.messages is not None:
        quota = min(quota, args.messages)
    stamps = array("q")
    if stamps.itemsize != 8 or sys.byteorder != "little":
        raise SystemExit("asyncio_pingpong: needs 8-byte little-endian int64 arrays")
    now = time.monotonic_ns
    send, receive, tick = producer.send_async, consumer.receive_async, stamps.append
    expected = args.payload
    print("ready", flush=True)
    wait_for_go()
    before = counters()
    begin = now()
    deadline = begin + int(args.seconds * 1e9) if args.seconds is not None else None
    tick(begin)
    rounds = 0
    last = begin
    while rounds < quota and (deadline is None or last < deadline):
        stamp(payload, 0, rounds)
        await send(payload)
        answer = await receive()
        if len(answer) != expected:
            raise SystemExit(f"asyncio_pingpong: an answer of {len(answer)} bytes")
        last = now()
        tick(last)
        rounds += 1
    await send(payload[:STOP_LEN])
    end = now()
    after = counters()
    with open(args.stamps, "wb") as out:
        stamps.tofile(out)
    return result(rounds, begin, end, before, after, consumer)


async def pong(args: argparse.Namespace) -> dict:
    producer = dmxp.Producer(
        args.channel + 1, capacity=args.capacity, segment=args.segment, size=args.size
    )
    consumer = dmxp.Consumer(args.channel, segment=args.segment)
    answer = b"\xa5" * args.payload
    send, receive = producer.send_async, consumer.receive_async
    print("ready", flush=True)
    wait_for_go()
    before = counters()
    begin = time.monotonic_ns()
    rounds = 0
    while True:
        message = await receive()
        if len(message) == STOP_LEN:
            break
        await send(answer)
        rounds += 1
    end = time.monotonic_ns()
    after = counters()
    return result(rounds, begin, end, before, after, consumer)


def main() -> int:
    parser = argparse.ArgumentParser(prog="asyncio_pingpong.py", description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("ping", "pong"), required=True)
    parser.add_argument("--segment", required=True, help="POSIX shm name of the run's segment")
    parser.add_argument("--size", type=int, required=True, help="bytes of the segment")
    parser.add_argument("--channel", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--payload", type=int, default=32)
    parser.add_argument("--messages", type=int, help="round trips (instead of --seconds)")
    parser.add_argument("--seconds", type=float, help="seconds from the go")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--max-samples", type=int, default=2_000_000)
    parser.add_argument("--cpu", type=int, help="CPU to pin this process to")
    parser.add_argument("--stamps", help="ping: where to write the clock readings")
    args = parser.parse_args()
    if args.role == "ping" and (
        args.stamps is None or (args.messages is None) == (args.seconds is None)
    ):
        parser.error("a ping needs --stamps and one of --messages, --seconds")
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError:
            pass  # best effort, as the Rust children pin themselves
    result = asyncio.run(ping(args) if args.role == "ping" else pong(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
