"""``python -m dmxp``: tools for DMXP segments.

``python -m dmxp inspect [--segment NAME | --file PATH] [--json]`` is the Rust ``dmxp inspect``
(docs/CLI.md) for machines without it: the same report, from the same checks of the Rust core
(the extension's port of the CLI's report), printed the same way.

- The segment: ``--file PATH``, else ``--segment NAME`` (a leading ``/`` is added if missing),
  else the environment's ``DMXP_SEGMENT``, else ``/dmxp_alloc``. It is read without mapping
  or writing it.
- Text output: the header fields, a table of every channel entry in use (``ID STATUS STATE
  CAPACITY HEAD TAIL DEPTH PEERS NOT_EMPTY_WAITERS NOT_FULL_WAITERS CREATOR_PID
  BAND_OFFSET``), the registered peers (alive or dead), the positions holding a channel up,
  and the validation result: ``validation: ok``, or every problem found (``FIELD CHANNEL
  PROBLEM``).
- ``--json``: one object with the schema of ``dmxp inspect --json`` (docs/CLI.md).

Exit status, as ``dmxp``'s: 0 when the segment is valid; 1 when it is not (the report is
printed in full and one line on stderr names the fields at fault), when the object is not a
DMXP segment at all (one line on stderr; the JSON report still on stdout with ``--json``), or
when it cannot be read (it does not exist, permission denied: one line on stderr); 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import _dmxp, shm_path

PROG = "python -m dmxp"

#: The column headings of the channel table, as ``dmxp inspect`` prints them.
CHANNEL_COLUMNS = (
    "ID",
    "STATUS",
    "STATE",
    "CAPACITY",
    "HEAD",
    "TAIL",
    "DEPTH",
    "PEERS",
    "NOT_EMPTY_WAITERS",
    "NOT_FULL_WAITERS",
    "CREATOR_PID",
    "BAND_OFFSET",
)
PEER_COLUMNS = (
    "INDEX",
    "PID",
    "RUNTIME",
    "ROLE",
    "CHANNEL",
    "ALIVE",
    "START_TIME",
    "INTENT",
    "WAITING",
)
PROBLEM_COLUMNS = ("FIELD", "CHANNEL", "PROBLEM")


class Source:
    """Where a segment lives: a POSIX shm object by name (with its leading ``/``) or a file."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind  # "shm" or "file", as in the JSON output
        self.name = name

    @property
    def path(self) -> str:
        return shm_path(self.name) if self.kind == "shm" else self.name

    def __str__(self) -> str:
        return f"{'shm' if self.kind == 'shm' else 'file'} segment {self.name}"

    def object(self) -> str:
        """The object, before anything says it is a segment."""
        return f"shm object {self.name}" if self.kind == "shm" else f"file {self.name}"


def source_of(segment: str | None, file: str | None) -> Source:
    """``--file``, else ``--segment`` (or ``DMXP_SEGMENT``), else ``/dmxp_alloc``."""
    if file is not None:
        return Source("file", file)
    name = segment if segment is not None else os.environ.get("DMXP_SEGMENT")
    if name is None:
        name = _dmxp.DEFAULT_SEGMENT
    return Source("shm", "/" + name.lstrip("/"))


def inspect_bytes(data: bytes, label: str = "segment") -> dict[str, Any]:
    """The ``dmxp inspect --json`` report of a copy of a segment's bytes (as a file named
    ``label``): header, channels, peers, stuck positions, every problem."""
    return _dmxp.inspect_bytes(data, "file", label)


def inspect_source(source: Source) -> dict[str, Any]:
    """The report of the segment ``source`` names; OSError when it cannot be read."""
    return _dmxp.inspect_path(source.path, source.kind, source.name)


def table(rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart, the last one unpadded (the CLI's elastic
    tabstops: ``tabwriter`` with padding 2)."""
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [
        max(len(row[i]) for row in rows if len(row) > i + 1) + 2 for i in range(columns - 1)
    ]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + row[-1] + "\n")
    return "".join(lines)


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def _field_list(report: dict[str, Any]) -> str:
    fields: list[str] = []
    for problem in report["problems"]:
        if problem["field"] not in fields:
            fields.append(problem["field"])
    return ", ".join(fields)


def not_a_segment(source: Source, report: dict[str, Any]) -> str | None:
    """The one line that says the object is not a DMXP segment, when it is not."""
    if report["is_dmxp_segment"]:
        return None
    why = report["problems"][0]["message"] if report["problems"] else ""
    return f"{source.object()} is not a DMXP segment: {why}"


def header_rows(source: Source, report: dict[str, Any]) -> list[list[str]]:
    rows = [["segment", str(source)], ["size", f"{report['size']} bytes"]]
    h = report["header"]
    if h is not None:
        note = " (DMXP_MEM)" if h["magic"] == f"{_dmxp.MAGIC:#018x}" else ""
        free = max(report["segment_len"] - h["band_cursor"], 0)
        offset = h["peer_table_offset"]
        records = h["peer_records"]
        rows += [
            ["magic", f"{h['magic']}{note}"],
            ["version", str(h["version"])],
            ["max_channels", str(h["max_channels"])],
            ["channel_count", str(h["channel_count"])],
            ["segment_size", str(h["segment_size"])],
            ["band_cursor", f"{h['band_cursor']} ({free} bytes free)"],
            ["creator_pid", str(h["creator_pid"])],
            ["header_flags", f"{h['header_flags']:#x}"],
            ["peer_table_offset", "0 (no peer table yet)" if offset == 0 else str(offset)],
            ["peer_records", "0 (the default: 256 records)" if records == 0 else str(records)],
        ]
    return rows


def channel_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [list(CHANNEL_COLUMNS)]
    for c in report["channels"]:
        peers = c["peers"]
        rows.append(
            [
                str(c["id"]),
                c["status"],
                c["state"],
                str(c["capacity"]),
                str(c["head"]),
                str(c["tail"]),
                "-" if c["depth"] is None else str(c["depth"]),
                "-" if peers is None else f"{peers['producers']}/{peers['consumers']}",
                str(c["not_empty_waiters"]),
                str(c["not_full_waiters"]),
                str(c["creator_pid"]),
                str(c["band_offset"]),
            ]
        )
    return rows


def peers_line(report: dict[str, Any]) -> str:
    header = report["header"]
    offset = header["peer_table_offset"] if header is not None else 0
    state = report["peer_table"]
    if state == "none":
        return "peers: none (no peer table yet)"
    if state == "invalid":
        field = (
            "peer_records"
            if any(p["field"] == "peer_records" for p in report["problems"])
            else "peer_table_offset"
        )
        return f"peers: not read ({field} is invalid)"
    if state == "skipped":
        return "peers: not read (the header is invalid)"
    if state == "unreadable":
        return f"peers: unreadable: {report['peer_table_error'] or 'unknown error'}"
    peers = report["peers"]
    if not peers:
        return f"peers: none registered (peer table at {offset})"
    dead = sum(1 for p in peers if not p["alive"])
    return f"peers: {len(peers)} registered, {dead} dead (peer table at {offset})"


def peer_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = [list(PEER_COLUMNS)]
    for p in report["peers"]:
        intent = p["intent"]
        rows.append(
            [
                str(p["index"]),
                str(p["pid"]),
                p["runtime_name"],
                p["role"],
                str(p["channel"]),
                "yes" if p["alive"] else "no",
                str(p["start_time"]),
                # Half-open, as Rust writes ranges: positions first..first+count.
                "-"
                if intent is None
                else f"{intent['position']}..{(intent['position'] + intent['count']) % 2**64}",
                p["waiting"] or "-",
            ]
        )
    return rows


def stuck_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for s in report["stuck"]:
        if s["side"] == "receive":
            what = "claimed by a producer, not published: receives wait"
        else:
            what = "claimed by a consumer, not freed: sends find the ring full"
        if s["holders"]:
            holders = ", ".join(
                f"pid {h['pid']} ({'alive' if h['alive'] else 'dead'}, record {h['index']})"
                for h in s["holders"]
            )
        else:
            holders = "no registered holder"
        if s["for_ms"] is None:
            since = "not yet noted by a waiting peer"
        else:
            since = f"stuck for {s['for_ms']} ms"
        lines.append(
            f"stuck: channel {s['channel']} position {s['position']}: {what}; "
            f"held by {holders}; {since}"
        )
    return lines


def validation_text(report: dict[str, Any]) -> str:
    if report["valid"]:
        return "validation: ok\n"
    problems = report["problems"]
    rows = [list(PROBLEM_COLUMNS)] + [
        [p["field"], "-" if p["channel"] is None else str(p["channel"]), p["message"]]
        for p in problems
    ]
    return (
        f"validation: FAILED, {len(problems)} problem{_plural(len(problems))}\n" + table(rows)
    )


def human(source: Source, report: dict[str, Any]) -> str:
    """The text ``dmxp inspect`` prints for ``report``."""
    out = [table(header_rows(source, report)), "\n"]
    channels = report["channels"]
    if not channels:
        out.append("channels: none\n")
    else:
        out.append(f"channels: {len(channels)}\n")
        out.append(table(channel_rows(report)))
    out.append("\n")
    out.append(peers_line(report) + "\n")
    if report["peers"]:
        out.append(table(peer_rows(report)))
    out.extend(line + "\n" for line in stuck_lines(report))
    out.append("\n")
    out.append(validation_text(report))
    return "".join(out)


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _os_error(source: Source, e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return f"error: {source} does not exist"
    reason = e.strerror or str(e)
    if e.errno:
        reason += f" (os error {e.errno})"
    return f"error: opening {source}: {reason}"


def run_inspect(args: argparse.Namespace) -> int:
    source = source_of(args.segment, args.file)
    try:
        report = inspect_source(source)
    except OSError as e:
        _error(_os_error(source, e))
        return 1
    line = not_a_segment(source, report)
    if line is not None:
        if args.json:
            print(json.dumps(report, indent=2, ensure_ascii=False))
        _error(line)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(human(source, report))
    sys.stdout.flush()
    if report["valid"]:
        return 0
    n = len(report["problems"])
    _error(f"{source} is invalid: {n} problem{_plural(n)} (fields: {_field_list(report)})")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    inspect = commands.add_parser(
        "inspect",
        help="show the header, every channel and the validation result (exit 1 if invalid)",
        description="Show the header, every channel, the registered peers and the validation "
        "result, as `dmxp inspect` does (exit 1 if invalid).",
    )
    source = inspect.add_mutually_exclusive_group()
    source.add_argument(
        "--segment",
        metavar="NAME",
        help="POSIX shared-memory segment name (a leading / is added if missing) "
        "[default: $DMXP_SEGMENT, else /dmxp_alloc]",
    )
    source.add_argument("--file", metavar="PATH", help="segment in a mapped file")
    inspect.add_argument(
        "--json", action="store_true", help="print one JSON object (schema in docs/CLI.md)"
    )
    # Accepted as `dmxp` accepts them on every segment command; inspect only reads the
    # object, so trust and mode do not apply.
    inspect.add_argument("--trust-owner", metavar="UID", type=int, action="append", default=[])
    inspect.add_argument("--mode", metavar="MODE", type=lambda s: int(s, 8))
    args = parser.parse_args(argv)
    try:
        return run_inspect(args)
    except BrokenPipeError:
        # A reader that went away (`... | head`) is not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # silences the flush at exit
        except OSError:
            pass
        return 0
