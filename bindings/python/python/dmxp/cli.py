"""``python -m dmxp``: tools for DMXP segments.

``python -m dmxp inspect [--segment NAME | --file PATH] [--json]`` reads a copy of a segment
(a POSIX shm segment by name, default ``/dmxp_alloc``, or any file holding one), prints its
header and every created channel (id, capacity, head, tail, depth, waiters, band offset), and
validates it with the Rust core's ``parse_segment``. Exit status: 0 when the segment is valid,
1 when it is not (the message names the bad field) or is still being created, 2 when it cannot
be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import _dmxp, errors, layout, shm_path

_STATES = {
    layout.STATE_EMPTY: "EMPTY",
    layout.STATE_CREATING: "CREATING",
    layout.STATE_READY: "READY",
}


def inspect_bytes(data: bytes, label: str) -> dict[str, Any]:
    """Describes and validates a segment's bytes (see the module documentation)."""
    report: dict[str, Any] = {
        "source": label,
        "bytes": len(data),
        "valid": False,
        "error": None,
        "header": layout.read_header(data),
        "segment_len": None,
        "channels": [],
    }
    try:
        parsed = _dmxp.parse_segment(data, label)
    except errors.DmxpError as e:
        report["error"] = {
            "kind": type(e).__name__,
            "field": getattr(e, "field", None),
            "channel": getattr(e, "channel", None),
            "message": str(e),
        }
        # Entries that claim to exist, as stored, for the reader to see what is wrong.
        for channel in range(_dmxp.MAX_CHANNELS):
            entry = layout.read_entry(data, channel)
            if entry is None:
                break
            if entry["capacity"] != 0 or entry["state"] != 0:
                entry["id"] = channel
                entry["validated"] = False
                report["channels"].append(entry)
        return report
    report["valid"] = True
    report["header"] = parsed["header"]
    report["segment_len"] = parsed["segment_len"]
    for channel in parsed["channels"]:
        entry = layout.read_entry(data, channel["id"]) or {}
        channel.update(
            state=entry.get("state"),
            creator_pid=entry.get("creator_pid"),
            receivers_waiting=entry.get("not_empty_waiters"),
            senders_waiting=entry.get("not_full_waiters"),
            not_empty_seq=entry.get("not_empty_seq"),
            not_full_seq=entry.get("not_full_seq"),
            validated=True,
        )
        report["channels"].append(channel)
    return report


def _print_text(report: dict[str, Any]) -> None:
    print(f"{report['source']}: {report['bytes']} bytes")
    header = report["header"]
    if header is None:
        print("header: (too short to hold one)")
    else:
        print(
            "header: magic {magic:#018x} version {version} max_channels {max_channels} "
            "channel_count {channel_count} segment_size {segment_size} band_cursor "
            "{band_cursor} creator_pid {creator_pid} header_flags {header_flags} "
            "peer_table_offset {peer_table_offset}".format(**header)
        )
    channels = report["channels"]
    if report["valid"]:
        print(f"channels: {len(channels)} created")
        print(
            f"  {'id':>3} {'capacity':>10} {'head':>12} {'tail':>12} {'depth':>10} "
            f"{'recv_wait':>9} {'send_wait':>9} {'band_offset':>12} {'state':>8}"
        )
        for c in channels:
            state = _STATES.get(c["state"], str(c["state"]))
            print(
                f"  {c['id']:>3} {c['capacity']:>10} {c['head']:>12} {c['tail']:>12} "
                f"{c['depth']:>10} {c['receivers_waiting']:>9} {c['senders_waiting']:>9} "
                f"{c['band_offset']:>12} {state:>8}"
            )
        print("valid: yes")
    else:
        if channels:
            print(f"entries in use (as stored, not validated): {len(channels)}")
            for c in channels:
                state = _STATES.get(c["state"], str(c["state"]))
                print(
                    f"  {c['id']:>3} channel_id {c['channel_id']} capacity {c['capacity']} "
                    f"band_offset {c['band_offset']} state {state} head {c['head']} "
                    f"tail {c['tail']}"
                )
        error = report["error"]
        where = f"field {error['field']}" if error["field"] else error["kind"]
        if error["channel"] is not None:
            where += f" of channel {error['channel']}"
        print(f"valid: NO ({where}): {error['message']}")


def _read(args: argparse.Namespace) -> tuple[bytes, str]:
    if args.file is not None:
        path, label = args.file, f"file {args.file}"
    else:
        path, label = shm_path(args.segment), f"shm segment {args.segment}"
    with open(path, "rb") as f:
        return f.read(), label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dmxp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser(
        "inspect", help="print and validate a segment's header and channels"
    )
    source = inspect.add_mutually_exclusive_group()
    source.add_argument("--segment", default=_dmxp.DEFAULT_SEGMENT, help="POSIX shm name")
    source.add_argument("--file", help="a file holding a segment")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    try:
        data, label = _read(args)
    except OSError as e:
        print(f"python -m dmxp inspect: cannot read the segment: {e}", file=sys.stderr)
        return 2
    report = inspect_bytes(data, label)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0 if report["valid"] else 1
