#!/usr/bin/env python3
"""Receives and checks the messages a producer sends, one thread per channel.

    consumer.py <num_channels> <messages_per_channel> [--segment NAME] [--record FILE]
                [--idle-exit-ms MS] [--wait SECONDS] [--trust-owner UID] [--mode MODE]
                [--large] [--blob]

Waits up to --wait seconds (default 30) for the segment and each channel to exist, then
receives on channels 0..num_channels until it has messages_per_channel distinct messages on
each (count mode). With --idle-exit-ms it instead stops once no message arrived on any channel
for MS milliseconds (for several consumers sharing a channel; nothing then counts as missing).
The segment is used only if this user owns it and its mode is within --mode (octal, default
0600); --trust-owner UID (repeatable) also accepts that user's segments. A refused segment is
reported in one line, exit status 1.

Every payload is checked with ``dmxp.pattern`` (length, checksum, filler) and its channel field
against the channel it arrived on; duplicates (the same (channel, index) twice) and corrupt
messages are counted, and in count mode the missing ones. With --large each message's length
must also be ``pattern.large_len(index, limit)``, with the channel's ``max_message_size`` as
the limit (the lengths the producers' --large sends; messages longer than one slot arrive
whole). With --blob each message is received in place (``Consumer.receive_view``: a view of
its blob-pool block, docs/PROTOCOL.md section 13), checked there, its length against
``pattern.blob_len(index)`` too, then released. --record FILE writes one line "channel index"
per message received. Prints msgs/s and the counts; exits 1 if anything is corrupt or
duplicated, or (count mode) missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback

import dmxp
from dmxp import pattern

# Longest single wait, so that the idle rule is checked often enough.
POLL_S = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("num_channels", type=int, help="channels to read: 0..num_channels")
    parser.add_argument("messages_per_channel", type=int, help="messages expected on each")
    parser.add_argument(
        "--segment",
        default=os.environ.get("DMXP_SEGMENT", dmxp.DEFAULT_SEGMENT),
        help="POSIX shm segment name",
    )
    parser.add_argument("--record", help='write "channel index" per received message here')
    parser.add_argument(
        "--idle-exit-ms",
        type=int,
        help="stop after no message arrived on any channel for this long (instead of counting)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the segment and channels, and (count mode) for a message",
    )
    parser.add_argument(
        "--trust-owner",
        type=int,
        action="append",
        default=[],
        metavar="UID",
        help="also attach to a segment owned by this uid (repeatable; PROTOCOL.md 3.4)",
    )
    parser.add_argument(
        "--mode",
        type=octal_mode,
        default=0o600,
        metavar="MODE",
        help="the widest mode (octal) accepted in the segment (default 0600)",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="expect the large-message lengths (pattern.large_len with the channel's limit) "
        "and check each message's length against them",
    )
    parser.add_argument(
        "--blob",
        action="store_true",
        help="receive blobs in place (receive_view) and check each one's length against "
        "pattern.blob_len(index)",
    )
    return parser.parse_args(argv)


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a segment name may hold a newline)."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)


def octal_mode(text: str) -> int:
    """``--mode``: permission bits in octal (``0666``, ``666`` or ``0o666``), at most 0777."""
    digits = text[2:] if text.lower().startswith("0o") else text
    try:
        mode = int(digits, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not within 0777")
    return mode


class Shared:
    """State the channel threads share: the time of the last message on any channel."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_arrival = time.monotonic()

    def arrived(self) -> None:
        now = time.monotonic()
        with self.lock:
            self.last_arrival = now

    def idle_for(self) -> float:
        with self.lock:
            return time.monotonic() - self.last_arrival


class Receiver(threading.Thread):
    def __init__(
        self, args: argparse.Namespace, channel: int, consumer: dmxp.Consumer, shared: Shared
    ) -> None:
        super().__init__(name=f"consumer-{channel}")
        self.args = args
        self.channel = channel
        self.consumer = consumer
        self.shared = shared
        self.error: BaseException | None = None
        self.seen: set[int] = set()
        self.received: list[int] = []
        self.duplicated = 0
        self.corrupt = 0
        self.first: float | None = None
        self.last: float | None = None
        # The channel's limit, for the lengths --large expects.
        self.limit = consumer.max_message_size

    def run(self) -> None:
        try:
            self.receive_all()
        except BaseException as e:  # reported by main
            self.error = e

    def check(self, payload: bytes | memoryview) -> None:
        try:
            channel, index = pattern.decode(payload)
        except pattern.PatternError:
            self.corrupt += 1
            return
        if channel != self.channel:
            self.corrupt += 1
            return
        if self.args.large and len(payload) != pattern.large_len(index, self.limit):
            self.corrupt += 1
            return
        if self.args.blob and len(payload) != pattern.blob_len(index):
            self.corrupt += 1
            return
        if self.args.record:
            self.received.append(index)
        if index in self.seen:
            self.duplicated += 1
        else:
            self.seen.add(index)

    def receive_some(self) -> bool:
        """Receives and checks what comes within POLL_S: a batch, or with --blob one blob
        in place. False when nothing came."""
        if self.args.blob:
            message = self.consumer.receive_view(timeout=POLL_S)
            if message is None:
                return False
            self.arrived()
            # The view reads the block in place (the pattern check copies it once).
            with message:
                self.check(message.view)
            return True
        batch = self.consumer.receive_batch(256, timeout=POLL_S)
        if not batch:
            return False
        self.arrived()
        for payload in batch:
            self.check(payload)
        return True

    def arrived(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.shared.arrived()

    def receive_all(self) -> None:
        args, consumer = self.args, self.consumer
        idle = args.idle_exit_ms / 1000.0 if args.idle_exit_ms is not None else None
        expected = args.messages_per_channel
        quiet_since = time.monotonic()
        while idle is not None or len(self.seen) < expected:
            if self.receive_some():
                quiet_since = time.monotonic()
            elif idle is not None:
                if self.shared.idle_for() >= idle:
                    break
            elif time.monotonic() - quiet_since >= args.wait:
                print(
                    f"consumer: channel {self.channel}: no message for {args.wait}s, giving up",
                    file=sys.stderr,
                )
                break
        stats = consumer.stats
        self.corrupt += stats["lost"] + stats["corrupt"] + stats["dropped_in_batch"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    consumers = []
    try:
        for channel in range(args.num_channels):
            consumers.append(
                dmxp.Consumer(
                    channel,
                    segment=args.segment,
                    wait=args.wait,
                    trust_owner=args.trust_owner,
                    mode=args.mode,
                )
            )
            if not consumers[-1].is_registered:
                print(
                    f"consumer: channel {channel}: not registered in the peer table: "
                    "no crash protection",
                    file=sys.stderr,
                )
    except dmxp.DmxpError as e:
        # A refused segment (UntrustedError), a missing channel, a corrupt segment...: one line.
        for consumer in consumers:
            consumer.close()
        print(f"consumer: {one_line(str(e))}", file=sys.stderr)
        return 1
    shared = Shared()
    receivers = [
        Receiver(args, channel, consumer, shared) for channel, consumer in enumerate(consumers)
    ]
    for receiver in receivers:
        receiver.start()
    for receiver in receivers:
        receiver.join()
    for consumer in consumers:
        consumer.close()

    ok = True
    unique = missing = duplicated = corrupt = 0
    firsts, lasts = [], []
    record = open(args.record, "w") if args.record else None
    try:
        for r in receivers:
            if r.error is not None:
                if not isinstance(r.error, dmxp.DmxpError):
                    # Not one of the binding's typed errors: a bug worth a traceback.
                    traceback.print_exception(r.error)
                print(f"consumer: channel {r.channel}: {r.error}", file=sys.stderr)
                ok = False
            count = len(r.seen)
            lost = max(args.messages_per_channel - count, 0) if args.idle_exit_ms is None else 0
            span = (r.last - r.first) if r.first is not None and r.last is not None else 0.0
            print(
                f"consumer: channel {r.channel}: received {count} "
                f"({count / max(span, 1e-9):.0f} msgs/s), lost {lost}, "
                f"duplicated {r.duplicated}, corrupt {r.corrupt}"
            )
            if record is not None:
                record.writelines(f"{r.channel} {index}\n" for index in r.received)
            unique += count
            missing += lost
            duplicated += r.duplicated
            corrupt += r.corrupt
            if r.first is not None and r.last is not None:
                firsts.append(r.first)
                lasts.append(r.last)
    finally:
        if record is not None:
            record.close()
    span = (max(lasts) - min(firsts)) if firsts else 0.0
    print(
        f"consumer: received {unique} messages on {args.num_channels} channels of "
        f"{args.segment} in {span:.3f}s: {unique / max(span, 1e-9):.0f} msgs/s; "
        f"lost {missing}, duplicated {duplicated}, corrupt {corrupt}"
    )
    ok = ok and missing == 0 and duplicated == 0 and corrupt == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
