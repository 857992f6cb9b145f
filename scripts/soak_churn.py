#!/usr/bin/env python3
"""Crash churn soak (not run by CI): producers and consumers of up to four languages are killed
with SIGKILL and restarted every 50-500 ms on one channel for a while, and then:

  * the channel still flows: a fresh `dmxp send` gets 100 messages (more than the ring holds)
    to a fresh `dmxp recv`, and for every language in the soak a fresh producer of it gets
    more than the ring holds, in order and without a gap, to a fresh consumer of the next
    language (rust -> python -> c -> go -> rust, of those present);
  * the peer table stays bounded (dead records are freed at registration, PROTOCOL.md §11.3):
    at most 64 records, sampled after every kill;
  * nothing arrives twice;
  * what is missing is explained by the kills: every message a producer instance sent before
    its last received one arrived, except at most one per kill (the position a killed producer
    held, tombstoned; the message a killed consumer had taken and not yet printed);
  * every language's producers got messages through and its consumers received some, and no
    child exited on its own (they run until killed; their stderr is shown if one did).

Producers and consumers, picked in turn per role so that each language gets its share:
  rust    the `dmxp` CLI: `send --stdin` (fed lines by this script), `recv --follow --raw`;
  python  small programs using the `dmxp` package (--python);
  c       bindings/c/examples/churn_producer.c and churn_consumer.c (--c-bin DIR);
  go      bindings/go/cmd/churn_producer and churn_consumer (--go-bin DIR).
c and go take part only when their directory is given. Each producer instance sends the text
payloads "<instance>:<index>" in order, index 0, 1, 2, ...; consumers print each payload as one
line on stdout as they receive it, flushed at once.

    scripts/soak-churn.sh [--seconds 180] [--segment /dmxp_soak]

(the shell script builds the CLI and the C and Go programs and passes their paths). Stdlib
only. Exits 1 on a failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
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

ROLES = ("producer", "consumer")
# The order of the end-of-run flow checks: each language's producer feeds the next one's consumer.
LANG_ORDER = ("rust", "python", "c", "go")


class Tally:
    """Every message received, per producer instance: a bitmap of the indices seen (the soak
    can move millions of messages; a list of strings would not fit), duplicates, counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, bytearray] = {}
        self.unique: dict[str, int] = {}
        self.top: dict[str, int] = {}
        self.duplicates = 0
        self.received = 0
        self.malformed = 0
        self.by_consumer_lang: dict[str, int] = {}

    def add(self, line: str, consumer_lang: str) -> None:
        tag, _, index = line.partition(":")
        with self.lock:
            self.received += 1
            self.by_consumer_lang[consumer_lang] = self.by_consumer_lang.get(consumer_lang, 0) + 1
            if not index.isdigit():
                self.malformed += 1
                return
            i = int(index)
            bits = self.seen.setdefault(tag, bytearray())
            byte, bit = divmod(i, 8)
            if byte >= len(bits):
                bits.extend(bytes(max(byte + 1 - len(bits), len(bits))))
            if bits[byte] >> bit & 1:
                self.duplicates += 1
                return
            bits[byte] |= 1 << bit
            self.unique[tag] = self.unique.get(tag, 0) + 1
            if i > self.top.get(tag, -1):
                self.top[tag] = i

    def follow(self, stream, consumer_lang: str, sink: list[str] | None = None) -> None:
        """Reads a consumer's stdout, one payload per line, until EOF (the consumer died)."""
        for line in stream:
            line = line.strip()
            if line:
                self.add(line, consumer_lang)
                if sink is not None:
                    sink.append(line)

    def gaps(self) -> int:
        with self.lock:
            return sum(self.top[tag] + 1 - self.unique[tag] for tag in self.unique)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--segment", default=f"/dmxp_soak_{os.getpid()}")
    parser.add_argument("--dmxp", required=True, help="path of the dmxp binary")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--c-bin", help="directory holding the C churn_producer, churn_consumer")
    parser.add_argument("--go-bin", help="directory holding the Go churn_producer, churn_consumer")
    args = parser.parse_args()
    seg = args.segment
    dmxp = args.dmxp
    bins = {"c": args.c_bin, "go": args.go_bin}
    langs = [lang for lang in LANG_ORDER if lang in ("rust", "python") or bins.get(lang)]
    for lang in ("c", "go"):
        if not bins[lang]:
            print(f"soak-churn: WARNING: no {lang} programs given: {lang} is NOT in this soak")
    subprocess.run(
        [dmxp, "create", "--segment", seg, "--channel", "0", "--capacity", "64", "--size", "4M"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # Every child's stderr, for a child that exits on its own.
    log = tempfile.TemporaryFile(mode="w+", prefix="soak_churn_")
    tally = Tally()
    kills = {(role, lang): 0 for role in ROLES for lang in langs}
    rng = random.Random(7)
    instance = 0
    producer_lang: dict[str, str] = {}
    readers: list[threading.Thread] = []
    early_exits: list[str] = []

    def rotation():
        while True:
            order = list(langs)
            rng.shuffle(order)
            yield from order

    next_lang = {role: rotation() for role in ROLES}

    def spawn(role: str, lang: str, sink: list[str] | None = None) -> tuple[subprocess.Popen, str]:
        """Starts one producer (instance tag returned) or consumer (read into the tally)."""
        nonlocal instance
        instance += 1
        tag = f"i{instance}"
        if role == "producer":
            producer_lang[tag] = lang
            if lang == "rust":
                proc = subprocess.Popen(
                    [dmxp, "send", "--segment", seg, "--channel", "0", "--stdin"],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, text=True,
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
                return proc, tag
            command = {
                "python": [args.python, "-c", PY_PRODUCER, seg, tag],
                "c": [os.path.join(bins["c"] or "", "churn_producer"), seg, tag],
                "go": [os.path.join(bins["go"] or "", "churn_producer"), seg, tag],
            }[lang]
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
            return proc, tag
        command = {
            "rust": [dmxp, "recv", "--segment", seg, "--channel", "0", "--follow", "--raw"],
            "python": [args.python, "-c", PY_CONSUMER, seg],
            "c": [os.path.join(bins["c"] or "", "churn_consumer"), seg],
            "go": [os.path.join(bins["go"] or "", "churn_consumer"), seg],
        }[lang]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        reader = threading.Thread(
            target=tally.follow, args=(proc.stdout, lang, sink), daemon=True
        )
        reader.start()
        readers.append(reader)
        return proc, tag

    def stop(proc: subprocess.Popen, what: str, sig: int = signal.SIGKILL) -> None:
        """Kills a child, noting one that had already exited on its own."""
        if proc.poll() is not None:
            early_exits.append(f"{what} exited on its own with status {proc.returncode}")
        else:
            proc.send_signal(sig)
        proc.wait()

    live: list[tuple[str, str, str, subprocess.Popen]] = []

    def start(role: str) -> None:
        lang = next(next_lang[role])
        proc, tag = spawn(role, lang)
        live.append((role, lang, tag, proc))

    for _ in range(3):
        start("producer")
        start("consumer")
    peak_records = 0
    started = time.monotonic()
    end = started + args.seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.05, 0.5))
        role, lang, tag, proc = live.pop(rng.randrange(len(live)))
        stop(proc, f"{lang} {role} {tag}")
        kills[(role, lang)] += 1
        start(role)
        report = json.loads(
            subprocess.run(
                [dmxp, "inspect", "--segment", seg, "--json"], capture_output=True, text=True
            ).stdout
            or "{}"
        )
        peak_records = max(peak_records, len(report.get("peers", [])))

    # Stop the producers, let the consumers drain, then stop them.
    for role, lang, tag, proc in live:
        if role == "producer":
            stop(proc, f"{lang} producer {tag}")
    time.sleep(2.0)
    for role, lang, tag, proc in live:
        if role == "consumer":
            stop(proc, f"{lang} consumer {tag}", signal.SIGTERM)
    for reader in readers:
        reader.join(timeout=10)
    # Whatever is left goes to a last consumer.
    rest = subprocess.run(
        [dmxp, "recv", "--segment", seg, "--channel", "0", "--raw", "--timeout-ms", "500"],
        capture_output=True, text=True,
    ).stdout
    for line in rest.splitlines():
        if line.strip():
            tally.add(line.strip(), "rust")
    churn_received = tally.received
    churn_duplicates = tally.duplicates
    gaps = tally.gaps()
    instances = len(tally.unique)
    by_producer_lang = dict.fromkeys(langs, 0)
    with tally.lock:
        for tag, count in tally.unique.items():
            lang = producer_lang.get(tag)
            if lang:
                by_producer_lang[lang] += count
        by_consumer_lang = {lang: tally.by_consumer_lang.get(lang, 0) for lang in langs}

    failures = []
    if churn_duplicates:
        failures.append(f"{churn_duplicates} messages arrived twice")
    if tally.malformed:
        failures.append(f"{tally.malformed} received lines are not <instance>:<index>")
    explained = sum(kills.values())
    if gaps > explained:
        failures.append(f"{gaps} messages missing, more than the {explained} kills explain")
    for lang in langs:
        if by_producer_lang[lang] == 0:
            failures.append(f"no message of a {lang} producer arrived")
        if by_consumer_lang[lang] == 0:
            failures.append(f"no {lang} consumer received anything")

    # Still flows (1): a fresh `dmxp recv` and `dmxp send`, more messages than the ring holds.
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
    flows = ["rust CLI 100/100"]

    # Still flows (2): each language's producer to the next language's consumer, one of each:
    # more than the ring holds, in order, no gap.
    for lang, next_one in zip(langs, langs[1:] + langs[:1]):
        lines: list[str] = []
        consumer, _ = spawn("consumer", next_one, lines)
        producer, tag = spawn("producer", lang)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(lines) < 1000:
            time.sleep(0.05)
        stop(producer, f"flow check {lang} producer {tag}")
        count = -1
        while count != len(lines) and time.monotonic() < deadline + 5:  # drained: idle 0.3 s
            count = len(lines)
            time.sleep(0.3)
        stop(consumer, f"flow check {next_one} consumer", signal.SIGTERM)
        readers[-1].join(timeout=10)
        own = [line for line in lines if line.partition(":")[0] == tag]
        in_order = own == [f"{tag}:{i}" for i in range(len(own))]
        flows.append(f"{lang}->{next_one} {len(own)}{'' if in_order else ' OUT OF ORDER'}")
        if len(own) <= 64 or not in_order:
            failures.append(
                f"{lang} producer -> {next_one} consumer after the churn: {len(own)} messages"
                f"{'' if in_order else ', not 0, 1, 2, ... in order'} (want more than 64)"
            )
    if tally.duplicates != churn_duplicates:
        failures.append(f"{tally.duplicates - churn_duplicates} duplicates in the flow checks")

    final = json.loads(
        subprocess.run(
            [dmxp, "inspect", "--segment", seg, "--json"], capture_output=True, text=True
        ).stdout
    )
    if peak_records > 64:
        failures.append(f"the peer table grew to {peak_records} records")
    if early_exits:
        failures.append(f"{len(early_exits)} children exited on their own: {early_exits[:5]}")
        log.seek(0)
        errors = log.read().splitlines()
        print(f"soak-churn: children's stderr ({len(errors)} lines, the last 20):")
        for line in errors[-20:]:
            print(f"    {line}")
    subprocess.run([dmxp, "rm", "--segment", seg], stdout=subprocess.DEVNULL)

    def per_lang(counts) -> str:
        return ", ".join(f"{lang} {counts[lang]}" for lang in langs)

    print(
        f"soak-churn: {args.seconds:.0f} s, languages {' '.join(langs)}; "
        f"{sum(kills[('producer', l)] for l in langs)} producer and "
        f"{sum(kills[('consumer', l)] for l in langs)} consumer kills"
    )
    print(f"soak-churn: producer kills: {per_lang({l: kills[('producer', l)] for l in langs})}")
    print(f"soak-churn: consumer kills: {per_lang({l: kills[('consumer', l)] for l in langs})}")
    print(
        f"soak-churn: {churn_received} messages received from {instances} producer instances; "
        f"sent by: {per_lang(by_producer_lang)}; received by: {per_lang(by_consumer_lang)}"
    )
    print(
        f"soak-churn: {churn_duplicates} duplicates, {gaps} missing (at most {explained} "
        f"allowed), peak {peak_records} peer records, {len(final.get('peers', []))} at the end, "
        f"{len(early_exits)} children exited on their own"
    )
    print(f"soak-churn: flows at the end: {', '.join(flows)}")
    for failure in failures:
        print(f"FAIL {failure}")
    if not failures:
        print("soak-churn: PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
