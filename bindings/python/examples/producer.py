#!/usr/bin/env python3
"""Sends verifiable messages on DMXP channels 0..num_channels, one thread per channel.

    producer.py <num_channels> <messages_per_channel> [capacity] [--segment NAME]
                [--first-index K] [--batch N] [--size BYTES] [--full-wait SECONDS]
                [--trust-owner UID] [--mode MODE] [--large] [--max-message-size BYTES]
                [--blob]

Opens or creates the segment and each channel (an existing channel is used as it is). An
existing segment is used only if this user owns it and its mode is within --mode (octal,
default 0600, also the mode of a segment this creates); --trust-owner UID (repeatable) also
accepts that user's segments. Otherwise it prints the one-line refusal and exits 1. Message
``index`` of channel ``c`` is ``dmxp.pattern.encode(c, index, default_len(index))``, for
indices K..K+messages_per_channel-1. A full ring makes the sender sleep (futex, GIL released)
until a consumer frees a slot, for at most --full-wait seconds (default 60). Prints one line
per channel and a summary with msgs/s; exits 0 when everything was sent.

--max-message-size BYTES: the largest message of channels this creates (above 960 they carry
messages longer than one slot, as runs; default 262144 with --large, else 960). --large sends
the large-message lengths instead, ``pattern.large_len(index, limit)`` with the channel's
limit: one slot, its edge, the first run, 64 KiB and the limit, in turn, one message per send
(batches carry single-slot messages, so --batch then has no effect), as the Rust example does.

--blob sends blobs (docs/PROTOCOL.md section 13): a segment this creates gets the blob pool
``pattern.BLOB_CLASSES`` (64 KiB x 32, 1 MiB x 8, 4 MiB x 6; --size must hold it besides the
rings) and channels this creates carry blobs. Message ``index`` is
``pattern.encode(c, index, pattern.blob_len(index))`` (24 bytes to 4 MiB), written in place
into a block loaned from the pool (``Producer.loan``) and committed; while the pool is
exhausted the loan waits for a consumer to release a block, for at most --full-wait seconds.
--batch has no effect then; --large cannot be combined with it.
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("num_channels", type=int, help="channels to use: 0..num_channels")
    parser.add_argument("messages_per_channel", type=int, help="messages to send on each")
    parser.add_argument(
        "capacity",
        type=int,
        nargs="?",
        default=dmxp.DEFAULT_CAPACITY,
        help="ring capacity of channels this creates (a power of two)",
    )
    parser.add_argument(
        "--segment",
        default=os.environ.get("DMXP_SEGMENT", dmxp.DEFAULT_SEGMENT),
        help="POSIX shm segment name",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=dmxp.DEFAULT_SEGMENT_SIZE,
        help="size of the segment if this creates it, in bytes",
    )
    parser.add_argument("--first-index", type=int, default=0, help="index of the first message")
    parser.add_argument(
        "--full-wait",
        type=float,
        default=60.0,
        help="seconds a send waits on a full ring for a consumer before giving up",
    )
    parser.add_argument(
        "--batch", type=int, default=1, help="send with the batch API, N messages per call"
    )
    add_trust_options(parser)
    parser.add_argument(
        "--large",
        action="store_true",
        help="send the large-message lengths (pattern.large_len with the channel's limit)",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        metavar="BYTES",
        help="the largest message of channels this creates (above 960 they carry runs; "
        "default 262144 with --large, else 960)",
    )
    parser.add_argument(
        "--blob",
        action="store_true",
        help="send blobs of pattern.blob_len(index) bytes, written in place into blocks "
        "loaned from the blob pool pattern.BLOB_CLASSES",
    )
    args = parser.parse_args(argv)
    if args.blob and args.large:
        parser.error("--blob and --large cannot be combined")
    if args.max_message_size is not None and args.max_message_size < 0:
        parser.error("--max-message-size must not be negative")
    if not 1 <= args.batch <= 4096:
        parser.error("--batch must be between 1 and 4096")
    if args.num_channels < 0 or args.messages_per_channel < 0 or args.first_index < 0:
        parser.error("counts and indices must not be negative")
    return args


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


def add_trust_options(parser: argparse.ArgumentParser) -> None:
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
        help="mode (octal) of a segment this creates, and the widest accepted in an existing "
        "one (default 0600)",
    )


class Sender(threading.Thread):
    def __init__(self, args: argparse.Namespace, channel: int, producer: dmxp.Producer) -> None:
        super().__init__(name=f"producer-{channel}")
        self.args = args
        self.channel = channel
        self.producer = producer
        self.error: BaseException | None = None
        self.sent = 0
        self.elapsed = 0.0

    def run(self) -> None:
        try:
            self.send_all()
        except BaseException as e:  # reported by main
            self.error = e

    def send_all(self) -> None:
        args, channel = self.args, self.channel
        with self.producer as producer:
            started = time.perf_counter()
            end = args.first_index + args.messages_per_channel
            index = args.first_index
            encode, default_len = pattern.encode, pattern.default_len
            if args.blob:
                # Written in place into the loaned block; committed when the block ends.
                while index < end:
                    payload = encode(channel, index, pattern.blob_len(index))
                    with producer.loan(len(payload), timeout=args.full_wait) as loan:
                        loan.view[:] = payload
                    index += 1
            elif args.large:
                # One at a time: batches carry single-slot messages.
                limit = producer.max_message_size
                send = producer.send_timeout
                while index < end:
                    send(encode(channel, index, pattern.large_len(index, limit)), args.full_wait)
                    index += 1
            elif args.batch == 1:
                send = producer.send_timeout
                while index < end:
                    send(encode(channel, index, default_len(index)), args.full_wait)
                    index += 1
            else:
                while index < end:
                    batch = [
                        encode(channel, i, default_len(i))
                        for i in range(index, min(end, index + args.batch))
                    ]
                    while batch:
                        sent = producer.send_batch(batch, timeout=args.full_wait)
                        index += sent
                        del batch[:sent]
            self.elapsed = time.perf_counter() - started
            self.sent = index - args.first_index


def max_message_size(args: argparse.Namespace) -> int:
    """The limit of channels this creates: --max-message-size, else 256 KiB with --large, else
    one slot."""
    if args.max_message_size is not None:
        return int(args.max_message_size)
    return 256 << 10 if args.large else 0


def open_producers(args: argparse.Namespace) -> list[dmxp.Producer]:
    """Opens (or creates) every channel before any thread starts, so that a segment that is
    refused is reported once."""
    producers: list[dmxp.Producer] = []
    try:
        for channel in range(args.num_channels):
            producer = dmxp.Producer(
                channel,
                capacity=args.capacity,
                segment=args.segment,
                size=args.size,
                trust_owner=args.trust_owner,
                mode=args.mode,
                max_message_size=max_message_size(args),
                blob_classes=pattern.BLOB_CLASSES if args.blob else None,
            )
            producers.append(producer)
            if not producer.is_registered:
                print(
                    f"producer: channel {channel}: not registered in the peer table: "
                    "no crash protection",
                    file=sys.stderr,
                )
    except BaseException:
        for opened in producers:
            opened.close()
        raise
    return producers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        producers = open_producers(args)
    except dmxp.DmxpError as e:
        # A refused segment (UntrustedError), a bad name, a corrupt segment...: one line.
        print(f"producer: {one_line(str(e))}", file=sys.stderr)
        return 1
    senders = [Sender(args, channel, p) for channel, p in enumerate(producers)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    elapsed = time.perf_counter() - started
    failed = False
    total = 0
    for sender in senders:
        if sender.error is not None:
            if not isinstance(sender.error, dmxp.DmxpError):
                # Not one of the binding's typed errors: a bug worth a traceback.
                traceback.print_exception(sender.error)
            print(f"producer: channel {sender.channel}: {sender.error}", file=sys.stderr)
            failed = True
            continue
        total += sender.sent
        rate = sender.sent / max(sender.elapsed, 1e-9)
        print(
            f"producer: channel {sender.channel}: sent {sender.sent} in {sender.elapsed:.3f}s "
            f"({rate:.0f} msgs/s)"
        )
    print(
        f"producer: sent {total} messages on {args.num_channels} channels of {args.segment} "
        f"in {elapsed:.3f}s: {total / max(elapsed, 1e-9):.0f} msgs/s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
