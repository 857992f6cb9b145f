"""Handles across os.fork (PROTOCOL.md section 11.5): a child registers as itself, with its own
start time (a child registered with its parent's would be judged a reused pid, that is dead,
and have its positions repaired under it), and a child that closes a handle it inherited never
frees its parent's peer record."""

from __future__ import annotations

import os
import subprocess
import sys

import dmxp

SMALL_SEGMENT = 1 << 20
LONG = 60.0

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



def test_fork_after_use_children_under_cpu_pressure_lose_nothing(segment: str) -> None:
    """Children forked after the parent used DMXP each send through a producer of their own
    while busy loops take every core (so they are preempted mid-send): none is judged dead and
    repaired under it (a cached parent start time did exactly that), so every message arrives
    once, nothing is counted lost, and the channel never wedges. Repeated, for the preemption
    points to vary."""
    children, per_child, rounds = 4, 20_000, 3
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        for round_ in range(rounds):
            parent = dmxp.Producer(0, capacity=64, segment=segment, size=SMALL_SEGMENT)
            parent.send(b"parent used it first")
            consumer = dmxp.Consumer(0, segment=segment)
            assert consumer.receive(timeout=LONG) == b"parent used it first"
            pids = []
            for child in range(children):
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        mine = dmxp.Producer(0, segment=segment)
                        for i in range(per_child):
                            mine.send_timeout(f"{child}:{i}".encode(), LONG)
                        mine.close()
                        code = 0
                    finally:
                        os._exit(code)
                pids.append(pid)
            got = []
            while len(got) < children * per_child:
                message = consumer.receive(timeout=LONG)
                assert message is not None, f"round {round_}: wedged after {len(got)}"
                got.append(message)
            for pid in pids:
                _, status = os.waitpid(pid, 0)
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
            assert len(set(got)) == len(got), "a message arrived twice"
            assert consumer.stats["lost"] == 0 and consumer.stats["revoked"] == 0
            for child in range(children):
                mine = [int(m.split(b":")[1]) for m in got if m.startswith(f"{child}:".encode())]
                assert mine == list(range(per_child)), f"child {child} out of order or short"
            parent.close()
            consumer.close()
            dmxp.unlink_segment(segment)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
