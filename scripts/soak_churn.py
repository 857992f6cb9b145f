#!/usr/bin/env python3
"""Crash churn soak (not run by CI): producers and consumers of two languages are killed with
SIGKILL and restarted every 50-500 ms on one channel for a while, and then:

  * the channel still flows (a fresh producer's messages all reach a fresh consumer);
  * the peer table stays bounded (dead records are freed at registration, PROTOCOL.md §11.3);
  * nothing arrives twice;
  * what is missing is explained by the kills: every message a producer instance sent before
    its last received one arrived, except at most one per kill (the position a killed producer
    held, tombstoned; the message a killed consumer had taken and not yet printed).

Producers and consumers: the `dmxp` CLI (Rust: `send --stdin`, `recv --follow --raw`) and
small Python programs using the `dmxp` package. Each producer instance sends lines
"<instance>:<index>" in order; consumers print each payload as they receive it.

    scripts/soak-churn.sh [--seconds 180] [--segment /dmxp_soak]

Stdlib only. Exits 1 on a failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

PY_PRODUCER = r"""
import sys, dmxp
p = dmxp.Producer(0, segment=sys.argv[1])
tag = sys.argv[2]
i = 0
while True:
    p.send_timeout(f"{tag}:{i}".encode(), 30.0)
    i += 1
"""

PY_CONSUMER = r"""
import sys, dmxp
c = dmxp.Consumer(0, segment=sys.argv[1])
out = sys.stdout
while True:
    m = c.receive(timeout=0.2)
    if m is not None:
        out.write(m.decode() + "\n")
        out.flush()
"""


class Collector:
    """Reads a consumer's stdout, one payload per line, into a shared list."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[str] = []

    def follow(self, stream) -> None:
        for line in stream:
            line = line.strip()
            if line:
                with self.lock:
                    self.received.append(line)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--segment", default=f"/dmxp_soak_{os.getpid()}")
    parser.add_argument("--dmxp", required=True, help="path of the dmxp binary")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    seg = args.segment
    dmxp = args.dmxp
    subprocess.run(
        [dmxp, "create", "--segment", seg, "--channel", "0", "--capacity", "64", "--size", "4M"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    collector = Collector()
    kills = {"producer": 0, "consumer": 0}
    rng = random.Random(7)
    instance = 0
    live: list[tuple[str, subprocess.Popen]] = []

    def start(role: str) -> None:
        nonlocal instance
        instance += 1
        tag = f"i{instance}"
        lang = rng.choice(["rust", "python"])
        if role == "producer" and lang == "rust":
            proc = subprocess.Popen(
                [dmxp, "send", "--segment", seg, "--channel", "0", "--stdin"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                text=True,
            )

            def feed(p=proc, tag=tag) -> None:
                i = 0
                try:
                    while p.poll() is None:
                        p.stdin.write(f"{tag}:{i}\n")
                        p.stdin.flush()
                        i += 1
                except (BrokenPipeError, OSError, ValueError):
                    pass

            threading.Thread(target=feed, daemon=True).start()
        elif role == "producer":
            proc = subprocess.Popen(
                [args.python, "-c", PY_PRODUCER, seg, tag],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        else:
            command = (
                [dmxp, "recv", "--segment", seg, "--channel", "0", "--follow", "--raw"]
                if lang == "rust"
                else [args.python, "-c", PY_CONSUMER, seg]
            )
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            threading.Thread(target=collector.follow, args=(proc.stdout,), daemon=True).start()
        live.append((role, proc))

    for _ in range(3):
        start("producer")
        start("consumer")
    peak_records = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.05, 0.5))
        index = rng.randrange(len(live))
        role, proc = live.pop(index)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills[role] += 1
        start(role)
        report = json.loads(
            subprocess.run(
                [dmxp, "inspect", "--segment", seg, "--json"], capture_output=True, text=True
            ).stdout
            or "{}"
        )
        peak_records = max(peak_records, len(report.get("peers", [])))

    # Stop the producers, let the consumers drain, then stop them.
    for role, proc in live:
        if role == "producer":
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    time.sleep(2.0)
    for role, proc in live:
        if role == "consumer":
            proc.send_signal(signal.SIGTERM)
            proc.wait()
    time.sleep(0.5)
    # Whatever is left goes to a last consumer.
    rest = subprocess.run(
        [dmxp, "recv", "--segment", seg, "--channel", "0", "--raw", "--timeout-ms", "500"],
        capture_output=True, text=True,
    ).stdout
    with collector.lock:
        received = list(collector.received) + [l for l in rest.splitlines() if l]

    failures = []
    duplicates = len(received) - len(set(received))
    if duplicates:
        failures.append(f"{duplicates} messages arrived twice")
    by_instance: dict[str, list[int]] = {}
    for line in received:
        tag, _, index = line.partition(":")
        if index.isdigit():
            by_instance.setdefault(tag, []).append(int(index))
    gaps = sum(max(v) + 1 - len(set(v)) for v in by_instance.values())
    explained = kills["producer"] + kills["consumer"]
    if gaps > explained:
        failures.append(f"{gaps} messages missing, more than the {explained} kills explain")
    # Still flows: a fresh consumer and producer, more messages than the ring holds.
    receiver = subprocess.Popen(
        [dmxp, "recv", "--segment", seg, "--channel", "0", "--count", "100", "--raw",
         "--timeout-ms", "10000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    flow = subprocess.run(
        [dmxp, "send", "--segment", seg, "--channel", "0", *[f"end:{i}" for i in range(100)]],
        capture_output=True, text=True,
    )
    got_out, got_err = receiver.communicate(timeout=60)
    if flow.returncode != 0 or got_out.split() != [f"end:{i}" for i in range(100)]:
        failures.append(f"the channel does not flow at the end: {flow.stderr} {got_err}")
    final = json.loads(
        subprocess.run(
            [dmxp, "inspect", "--segment", seg, "--json"], capture_output=True, text=True
        ).stdout
    )
    if peak_records > 64:
        failures.append(f"the peer table grew to {peak_records} records")
    subprocess.run([dmxp, "rm", "--segment", seg], stdout=subprocess.DEVNULL)

    print(
        f"soak-churn: {args.seconds:.0f} s, {kills['producer']} producer and {kills['consumer']} "
        f"consumer kills, {len(received)} messages received from {len(by_instance)} producer "
        f"instances, {duplicates} duplicates, {gaps} missing (at most {explained} allowed), "
        f"peak {peak_records} peer records, {len(final.get('peers', []))} at the end"
    )
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
