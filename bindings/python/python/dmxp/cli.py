"""``python -m dmxp``: tools for DMXP segments.

``python -m dmxp inspect [--segment NAME | --file PATH] [--json]`` is the Rust ``dmxp inspect``
(docs/CLI.md) for machines without it: the same report, printed the same way, by the same Rust
code (the ``dmxp-inspect`` crate, through the extension).

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
CHANNEL_COLUMNS = tuple(_dmxp.INSPECT_CHANNEL_COLUMNS)
PEER_COLUMNS = tuple(_dmxp.INSPECT_PEER_COLUMNS)
PROBLEM_COLUMNS = tuple(_dmxp.INSPECT_PROBLEM_COLUMNS)


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
    """Left-aligned columns two spaces apart, the last one unpadded: the tables of ``dmxp``."""
    return _dmxp.render_table(rows)


def _of(source: Source, report: dict[str, Any]) -> dict[str, Any]:
    """``report`` as a report of ``source``."""
    return {**report, "source": {"kind": source.kind, "name": source.name}}


def human(source: Source, report: dict[str, Any]) -> str:
    """The text ``dmxp inspect`` prints for ``report``."""
    return _dmxp.inspect_text(_of(source, report))


def verdict(source: Source, report: dict[str, Any]) -> str | None:
    """The one line that says why ``dmxp inspect`` fails: the object is not a DMXP segment,
    or the segment is invalid (naming the fields at fault); None when it is valid."""
    return _dmxp.inspect_verdict(_of(source, report))


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
    if args.json:
        # Also of an object that is not a DMXP segment, for scripts; a person gets the one
        # line of the verdict alone.
        print(json.dumps(report, indent=2, ensure_ascii=False))
    elif report["is_dmxp_segment"]:
        sys.stdout.write(human(source, report))
    sys.stdout.flush()
    line = verdict(source, report)
    if line is None:
        return 0
    _error(line)
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
