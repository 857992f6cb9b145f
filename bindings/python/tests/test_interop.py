"""Across processes with the Rust client: Python producer -> Rust consumer, Rust producer ->
Python consumer, a mixed run on one channel, and the Rust validator on what Python wrote."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import dmxp
from dmxp import pattern

from .conftest import SMALL_SEGMENT, python_example

TIMEOUT = 180


def start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], what: str) -> str:
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{what} did not finish:\n{out}\n{err}")
    assert process.returncode == 0, f"{what} failed ({process.returncode}):\n{out}\n{err}"
    return out


def summary(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("batch", ["1", "16"])
def test_python_producer_to_rust_consumer(rust_examples, segment: str, batch: str) -> None:
    consumer = start([rust_examples["consumer"], "2", "3000", "--segment", segment, "--wait", "60"])
    producer = start(
        python_example("producer")
        + ["2", "3000", "64", "--segment", segment, "--size", str(SMALL_SEGMENT), "--batch", batch]
    )
    produced = finish(producer, "python producer")
    consumed = finish(consumer, "rust consumer")
    assert "sent 6000 messages on 2 channels" in summary(produced)
    assert "received 6000 messages on 2 channels" in summary(consumed)
    assert summary(consumed).endswith("lost 0, duplicated 0, corrupt 0")


@pytest.mark.parametrize("batch", ["1", "32"])
def test_rust_producer_to_python_consumer(rust_examples, segment: str, batch: str) -> None:
    consumer = start(
        python_example("consumer") + ["2", "3000", "--segment", segment, "--wait", "60"]
    )
    producer = start(
        [
            rust_examples["producer"],
            "2",
            "3000",
            "64",
            "--segment",
            segment,
            "--size",
            str(SMALL_SEGMENT),
            "--batch",
            batch,
        ]
    )
    finish(producer, "rust producer")
    consumed = finish(consumer, "python consumer")
    assert "received 6000 messages on 2 channels" in summary(consumed)
    assert summary(consumed).endswith("lost 0, duplicated 0, corrupt 0")


def test_python_library_reads_rust_messages(rust_examples, segment: str) -> None:
    producer = start(
        [
            rust_examples["producer"],
            "1",
            "500",
            "8",
            "--segment",
            segment,
            "--size",
            str(SMALL_SEGMENT),
            "--first-index",
            "1000",
        ]
    )
    with dmxp.Consumer(0, segment=segment, wait=60.0, idle_timeout=30.0) as consumer:
        messages = []
        while len(messages) < 500:
            message = consumer.receive_with_meta(timeout=30.0)
            assert message is not None, "the Rust producer stopped sending"
            messages.append(message)
    finish(producer, "rust producer")
    assert [m.message_id for m in messages] == list(range(500))
    assert [pattern.decode(m.payload) for m in messages] == [(0, 1000 + i) for i in range(500)]
    assert {(m.sender_runtime, m.sender_pid, m.channel_id) for m in messages} == {
        (1, producer.pid, 0)
    }


def test_consumer_that_starts_first_waits_for_the_producer(rust_examples, segment: str) -> None:
    consumer = start(
        python_example("consumer") + ["1", "200", "--segment", segment, "--wait", "60"]
    )
    # The Python consumer is already waiting for the segment to appear.
    producer = start(
        [
            rust_examples["producer"],
            "1",
            "200",
            "4",
            "--segment",
            segment,
            "--size",
            str(SMALL_SEGMENT),
        ]
    )
    finish(producer, "rust producer")
    assert summary(finish(consumer, "python consumer")).endswith("lost 0, duplicated 0, corrupt 0")


def read_record(path: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split())) for line in path.read_text().splitlines()]  # type: ignore[misc]


def test_mixed_producers_and_consumers_on_one_channel(
    rust_examples, segment: str, tmp_path
) -> None:
    """Python and Rust producers (disjoint index ranges) and Python and Rust consumers on one
    ring of 16: every message received exactly once overall."""
    per_producer = 4000
    with dmxp.Producer(0, capacity=16, segment=segment, size=SMALL_SEGMENT):
        pass  # the channel exists before anyone starts
    py_record, rust_record = tmp_path / "python.rec", tmp_path / "rust.rec"
    consumers = [
        start(
            python_example("consumer")
            + ["1", "0", "--segment", segment, "--idle-exit-ms", "3000", "--record", str(py_record)]
        ),
        start(
            [
                rust_examples["consumer"],
                "1",
                "0",
                "--segment",
                segment,
                "--idle-exit-ms",
                "3000",
                "--record",
                str(rust_record),
            ]
        ),
    ]
    producers = [
        start(
            python_example("producer")
            + ["1", str(per_producer), "--segment", segment, "--first-index", "0"]
        ),
        start(
            python_example("producer")
            + [
                "1",
                str(per_producer),
                "--segment",
                segment,
                "--first-index",
                str(per_producer),
                "--batch",
                "8",
            ]
        ),
        start(
            [
                rust_examples["producer"],
                "1",
                str(per_producer),
                "--segment",
                segment,
                "--first-index",
                str(2 * per_producer),
            ]
        ),
    ]
    for process in producers:
        finish(process, "producer")
    for process in consumers:
        finish(process, "consumer")
    python_got, rust_got = read_record(py_record), read_record(rust_record)
    counts = Counter(python_got + rust_got)
    assert set(counts) == {(0, i) for i in range(3 * per_producer)}
    assert max(counts.values()) == 1
    # Both consumers took part (the ring of 16 cannot hold everything for one of them).
    assert python_got and rust_got


def test_rust_validator_accepts_a_python_segment(
    rust_cli: str, rust_examples, segment: str
) -> None:
    with dmxp.Producer(0, capacity=4, segment=segment, size=SMALL_SEGMENT) as p0:
        with dmxp.Producer(7, capacity=2, segment=segment, size=SMALL_SEGMENT) as p7:
            for lap in range(12):  # several laps of both rings
                p0.send_all([pattern.encode(0, 4 * lap + k, 40) for k in range(4)])
                p7.send(b"lap %d" % lap)
                with (
                    dmxp.Consumer(0, segment=segment) as c0,
                    dmxp.Consumer(7, segment=segment) as c7,
                ):
                    assert len(c0.receive_batch(4)) == 4
                    assert c7.receive() == b"lap %d" % lap
            p0.send(pattern.encode(0, 48, 32))
    result = subprocess.run(
        [rust_cli, "inspect", "--segment", segment, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["problems"] == []
    assert [
        (c["id"], c["status"], c["capacity"], c["head"], c["tail"], c["depth"])
        for c in report["channels"]
    ] == [(0, "ok", 4, 48, 49, 1), (7, "ok", 2, 12, 12, 0)]
    # The Rust consumer receives the message Python left in the ring.
    consumer = subprocess.run(
        [rust_examples["consumer"], "1", "1", "--segment", segment, "--wait", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert consumer.returncode == 0, consumer.stdout + consumer.stderr
    assert summary(consumer.stdout).endswith("lost 0, duplicated 0, corrupt 0")
    assert "received 1 messages" in summary(consumer.stdout)


LARGE_LIMIT = 262144


def large_producer(rust_examples, language: str, segment: str, count: int) -> list[str]:
    program = python_example("producer") if language == "python" else [rust_examples["producer"]]
    return program + [
        "1",
        str(count),
        "1024",
        "--segment",
        segment,
        "--size",
        str(SMALL_SEGMENT),
        "--large",
        "--max-message-size",
        str(LARGE_LIMIT),
    ]


def large_consumer(rust_examples, language: str, segment: str, count: int) -> list[str]:
    program = python_example("consumer") if language == "python" else [rust_examples["consumer"]]
    return program + ["1", str(count), "--segment", segment, "--wait", "60", "--large"]


@pytest.mark.parametrize(
    "producer_language, consumer_language",
    [("python", "rust"), ("rust", "python"), ("python", "python")],
)
def test_large_messages_across_processes(
    rust_examples, segment: str, producer_language: str, consumer_language: str
) -> None:
    """The cross-language matrix's large-message cell: messages of 24 B, 960 B, 961 B, 64 KiB
    and 256 KiB in turn (`--large`), each checked for its length and checksum, exactly once."""
    count = 200
    consumer = start(large_consumer(rust_examples, consumer_language, segment, count))
    producer = start(large_producer(rust_examples, producer_language, segment, count))
    produced = finish(producer, f"{producer_language} producer")
    consumed = finish(consumer, f"{consumer_language} consumer")
    assert f"sent {count} messages on 1 channels" in summary(produced)
    assert f"received {count} messages on 1 channels" in summary(consumed)
    assert summary(consumed).endswith("lost 0, duplicated 0, corrupt 0")


def test_the_large_consumer_checks_lengths(rust_examples, segment: str) -> None:
    """`consumer.py --large` counts a valid pattern of the wrong length as corrupt (here the
    Rust producer's ordinary lengths) and fails."""
    producer = start(
        [rust_examples["producer"], "1", "50", "1024", "--segment", segment]
        + ["--size", str(SMALL_SEGMENT), "--max-message-size", str(LARGE_LIMIT)]
    )
    finish(producer, "rust producer")
    # All 50 are in the ring; the consumer gives up 2 s after the last.
    command = large_consumer(rust_examples, "python", segment, 50)
    command[command.index("--wait") + 1] = "2"
    consumer = start(command)
    out, err = consumer.communicate(timeout=TIMEOUT)
    assert consumer.returncode == 1, out + err
    # default_len is never one of large_len's lengths (24, 960, 961, 65536, the limit).
    assert summary(out).endswith("lost 50, duplicated 0, corrupt 50")


def test_python_library_reads_rust_long_messages(rust_examples, segment: str) -> None:
    """The Rust producer's `--large` run read with every receive form: whole payloads, the
    first slot's metadata, positions advancing by the slots each message took."""
    count = 10  # 694 positions: all in the ring of 1,024 before the consumer starts
    producer = start(large_producer(rust_examples, "rust", segment, count))
    finish(producer, "rust producer")
    with dmxp.Consumer(0, segment=segment, wait=60.0) as consumer:
        assert consumer.max_message_size == LARGE_LIMIT
        buffer = bytearray(LARGE_LIMIT)
        position = 0
        for index in range(count):
            length = pattern.large_len(index, LARGE_LIMIT)
            expected = pattern.encode(0, index, length)
            if index % 3 == 0:
                message = consumer.receive_with_meta(timeout=10.0)
                assert message is not None
                assert (message.payload, message.message_id) == (expected, position)
                assert message.sender_runtime == 1
            elif index % 3 == 1:
                assert consumer.receive_into(buffer, timeout=10.0) == length
                assert buffer[:length] == expected
            else:
                assert consumer.receive_batch(1, timeout=10.0) == [expected]
            position += max(1, -(-length // dmxp.MSG_INLINE))
        assert consumer.receive() is None
        assert consumer.info()["head"] == position
