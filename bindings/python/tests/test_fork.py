"""Handles across os.fork (PROTOCOL.md section 11.5): a child registers as itself, with its own
start time (a child registered with its parent's would be judged a reused pid, that is dead,
and have its positions repaired under it), and a child that closes a handle it inherited never
frees its parent's peer record."""

from __future__ import annotations

import os

import dmxp

SMALL_SEGMENT = 1 << 20

# Exit codes of the child, one per check.
OK, OWN_RECORD_WRONG, PARENT_RECORD_FREED, CRASHED = 0, 10, 11, 12


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 of the whole line


def records_of(segment: str, pid: int) -> list[dict]:
    return [r for r in dmxp.peers(segment) if r["pid"] == pid]


def child_checks(segment: str, inherited: dmxp.Producer, parent: int) -> int:
    me = os.getpid()
    consumer = dmxp.Consumer(0, segment=segment)
    mine = records_of(segment, me)
    if [r["start_time"] for r in mine] != [start_time(me)]:
        return OWN_RECORD_WRONG
    inherited.close()
    if not records_of(segment, parent):
        return PARENT_RECORD_FREED
    consumer.close()
    return OK


def test_a_forked_child_registers_as_itself_and_never_frees_its_parents_record(
    segment: str,
) -> None:
    producer = dmxp.Producer(0, capacity=8, segment=segment, size=SMALL_SEGMENT)
    parent = os.getpid()
    assert [r["start_time"] for r in records_of(segment, parent)] == [start_time(parent)]
    pid = os.fork()
    if pid == 0:
        code = CRASHED
        try:
            code = child_checks(segment, producer, parent)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == OK, status
    # The parent's record is still its own and its handle still sends.
    assert [r["start_time"] for r in records_of(segment, parent)] == [start_time(parent)]
    producer.send(b"still registered")
    producer.close()

