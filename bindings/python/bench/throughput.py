#!/usr/bin/env python3
"""Throughput of the Python client for small (32-byte) messages, in msgs/s.

    python bench/throughput.py [--messages N] [--runs R] [--capacity C] [--batch B]

Measures, each as the median of R runs (default 3):

* in-process, one at a time: ``send`` then ``receive``, N times, one thread;
* in-process, batched: ``send_batch`` of B then ``receive_batch(B)``;
* in-process, ``send`` then ``receive_into`` a preallocated bytearray;
* cross-process, one at a time: this process ``send_timeout``s N messages, a child process
  ``receive``s them (waiting on the futex when the ring is empty, the sender when it is full);
* cross-process, batched: ``send_batch(..., timeout)`` of B, ``receive_batch(B, timeout)``.

A cross-process rate is N divided by the time from the producer's first send to the
consumer's last receive (CLOCK_MONOTONIC in both processes). The issue's targets: at least
1 M msgs/s in batches and 0.5 M msgs/s one at a time. This is a benchmark, not a test: the
numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import dmxp

PAYLOAD = b"m" * 32


def in_process_single(producer: dmxp.Producer, consumer: dmxp.Consumer, n: int) -> float:
    send, receive = producer.send, consumer.receive
    started = time.perf_counter()
    for _ in range(n):
        send(PAYLOAD)
        receive()
    return n / (time.perf_counter() - started)


def in_process_batch(producer: dmxp.Producer, consumer: dmxp.Consumer, n: int, batch: int) -> float:
    payloads = [PAYLOAD] * batch
    send_batch, receive_batch = producer.send_batch, consumer.receive_batch
    rounds = n // batch
    received = 0
    started = time.perf_counter()
    for _ in range(rounds):
        send_batch(payloads)
        received += len(receive_batch(batch))
    elapsed = time.perf_counter() - started
    assert received == rounds * batch
    return received / elapsed


def in_process_into(producer: dmxp.Producer, consumer: dmxp.Consumer, n: int) -> float:
    buffer = bytearray(dmxp.MSG_INLINE)
    send, receive_into = producer.send, consumer.receive_into
    started = time.perf_counter()
    for _ in range(n):
        send(PAYLOAD)
        receive_into(buffer)
    return n / (time.perf_counter() - started)


def consumer_child(segment: str, n: int, batch: int) -> None:
    """The receiving process of a cross-process run: prints the CLOCK_MONOTONIC time of the
    last receive."""
    with dmxp.Consumer(0, segment=segment) as consumer:
        print("ready", flush=True)
        received = 0
        if batch == 1:
            receive = consumer.receive
            while received < n:
                if receive(10.0) is None:
                    raise SystemExit("consumer: no message for 10 s")
                received += 1
        else:
            receive_batch = consumer.receive_batch
            while received < n:
                got = len(receive_batch(batch, 10.0))
                if got == 0:
                    raise SystemExit("consumer: no message for 10 s")
                received += got
        print(time.monotonic(), flush=True)


def cross_process(segment: str, n: int, batch: int, capacity: int) -> float:
    with dmxp.Producer(0, capacity=capacity, segment=segment, size=64 << 20) as producer:
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                segment,
                "--messages",
                str(n),
                "--batch",
                str(batch),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        if batch == 1:
            send = producer.send_timeout
            for _ in range(n):
                send(PAYLOAD, 10.0)
        else:
            payloads = [PAYLOAD] * batch
            send_batch = producer.send_batch
            sent = 0
            while sent < n:
                chunk = payloads if n - sent >= batch else payloads[: n - sent]
                sent += send_batch(chunk, 10.0)
        finished = float(child.stdout.readline())
        if child.wait() != 0:
            raise RuntimeError("the consumer process failed")
    return n / (finished - started)


def median_of(runs: int, measure) -> tuple[float, list[float]]:
    rates = [measure() for _ in range(runs)]
    return statistics.median(rates), rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        consumer_child(args.child, args.messages, args.batch)
        return 0

    n, runs, batch = args.messages, args.runs, args.batch
    segment = f"/dmxp_bench_{os.getpid()}"
    results = []
    try:
        with (
            dmxp.Producer(0, capacity=args.capacity, segment=segment, size=64 << 20) as producer,
            dmxp.Consumer(0, segment=segment) as consumer,
        ):
            results.append(
                (
                    "in-process, send + receive",
                    median_of(runs, lambda: in_process_single(producer, consumer, n)),
                )
            )
            results.append(
                (
                    f"in-process, send_batch + receive_batch ({batch})",
                    median_of(runs, lambda: in_process_batch(producer, consumer, n, batch)),
                )
            )
            results.append(
                (
                    "in-process, send + receive_into",
                    median_of(runs, lambda: in_process_into(producer, consumer, n)),
                )
            )
        dmxp.unlink_segment(segment)
        for label, b in (
            ("cross-process, one at a time", 1),
            (f"cross-process, batches of {batch}", batch),
        ):

            def run(b: int = b) -> float:
                name = f"{segment}_x{b}"
                try:
                    return cross_process(name, n, b, args.capacity)
                finally:
                    dmxp.unlink_segment(name)

            results.append((label, median_of(runs, run)))
    finally:
        try:
            dmxp.unlink_segment(segment)
        except dmxp.NotFoundError:
            pass

    print(
        f"dmxp Python throughput: {n} messages of {len(PAYLOAD)} bytes, capacity "
        f"{args.capacity}, median of {runs} runs ({os.cpu_count()} CPUs)"
    )
    for label, (median, rates) in results:
        each = ", ".join(f"{r / 1e6:.2f}" for r in rates)
        print(f"  {label:<45} {median / 1e6:6.2f} M msgs/s   (runs: {each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
