"""What a producer or consumer agrees to attach to (docs/PROTOCOL.md section 3.4).

The squatting cases need root: the test creates a segment, then hands it to another user
(nobody, 65534) and makes it world-writable, as a user who created the name first would. The
other cases run as any user.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator

import pytest

import dmxp
from dmxp import pattern

from .conftest import SMALL_SEGMENT, python_example, unique_segment_name

NOBODY = 65534
# Messages left in the squatted segment before it changes hands.
SEEDED = 4
CAPACITY = 16

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="handing a segment to another user (os.chown to 65534) needs root; CI runs as root",
)


def mode_of(segment: str) -> int:
    return stat.S_IMODE(os.stat(dmxp.shm_path(segment)).st_mode)


def digest(segment: str) -> str:
    with open(dmxp.shm_path(segment), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def squatted(segment: str) -> str:
    """A segment holding SEEDED pattern messages on channel 0, then owned by 65534:65534 with
    mode 0666."""
    with dmxp.Producer(0, capacity=CAPACITY, segment=segment, size=SMALL_SEGMENT) as producer:
        for index in range(SEEDED):
            producer.send(pattern.encode(0, index, pattern.default_len(index)))
    path = dmxp.shm_path(segment)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o666)
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o666)
    return segment


def assert_refused_squatter(error: dmxp.UntrustedError) -> None:
    assert error.owner == NOBODY
    assert error.mode == 0o666
    message = str(error)
    assert "uid 65534" in message and "0666" in message, message
    assert "\n" not in message


# --- The squatted segment (root) -------------------------------------------------------------


@needs_root
def test_producer_refuses_a_segment_of_another_user(squatted: str) -> None:
    before = digest(squatted)
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.Producer(0, capacity=CAPACITY, segment=squatted, size=SMALL_SEGMENT)
    assert_refused_squatter(caught.value)
    # Nothing was written: no channel created, no peer record taken.
    assert digest(squatted) == before


@needs_root
def test_consumer_refuses_a_segment_of_another_user(squatted: str) -> None:
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.Consumer(0, segment=squatted)
    assert_refused_squatter(caught.value)


@needs_root
def test_untrusted_error_is_a_permission_error(squatted: str) -> None:
    with pytest.raises(PermissionError) as caught:
        dmxp.Consumer(0, segment=squatted)
    error = caught.value
    assert isinstance(error, dmxp.UntrustedError)
    assert isinstance(error, dmxp.DmxpError)
    assert error.errno == errno.EACCES
    # The message is the whole str(), without an "[Errno 13]" prefix.
    assert str(error).startswith(f"shm segment {squatted}: "), str(error)


@needs_root
def test_trusting_the_owner_does_not_widen_the_mode(squatted: str) -> None:
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.Consumer(0, segment=squatted, trust_owner=NOBODY)
    assert_refused_squatter(caught.value)
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.Producer(0, segment=squatted, size=SMALL_SEGMENT, trust_owner=[NOBODY])
    assert_refused_squatter(caught.value)


@needs_root
def test_widening_the_mode_does_not_trust_the_owner(squatted: str) -> None:
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.Consumer(0, segment=squatted, mode=0o666)
    assert_refused_squatter(caught.value)


@needs_root
def test_both_opt_ins_attach_and_receive_what_was_sent_before(squatted: str) -> None:
    with dmxp.Consumer(0, segment=squatted, trust_owner=NOBODY, mode=0o666) as consumer:
        got = consumer.receive_batch(64)
        assert [pattern.decode(p) for p in got] == [(0, i) for i in range(SEEDED)]
    # A list of owners, the squatter among them; and a producer with the same opt-ins.
    with dmxp.Producer(
        0, segment=squatted, size=SMALL_SEGMENT, trust_owner=[1234, NOBODY], mode=0o666
    ) as producer:
        producer.send(b"after")
    with dmxp.Consumer(0, segment=squatted, trust_owner=(NOBODY,), mode=0o666) as consumer:
        assert consumer.receive() == b"after"


@needs_root
def test_peers_applies_the_same_rule(squatted: str) -> None:
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.peers(squatted)
    assert_refused_squatter(caught.value)
    assert dmxp.peers(squatted, trust_owner=NOBODY, mode=0o666) == []


# --- Own segments with a wider mode (any user) -----------------------------------------------


def test_own_segment_with_a_group_mode_needs_that_mode(segment: str) -> None:
    dmxp.Producer(0, capacity=CAPACITY, segment=segment, size=SMALL_SEGMENT).close()
    os.chmod(dmxp.shm_path(segment), 0o660)
    with pytest.raises(dmxp.UntrustedError) as caught:
        dmxp.Consumer(0, segment=segment)
    error = caught.value
    assert error.owner == os.geteuid()
    assert error.mode == 0o660
    assert "0660" in str(error) and "0600" in str(error), str(error)
    with pytest.raises(dmxp.UntrustedError):
        dmxp.Producer(0, segment=segment, size=SMALL_SEGMENT)
    # A narrower mode than the object's is not enough either.
    with pytest.raises(dmxp.UntrustedError):
        dmxp.Consumer(0, segment=segment, mode=0o640)
    with dmxp.Producer(0, segment=segment, size=SMALL_SEGMENT, mode=0o660) as producer:
        producer.send(b"group")
    with dmxp.Consumer(0, segment=segment, mode=0o660) as consumer:
        assert consumer.receive() == b"group"
    assert dmxp.peers(segment, mode=0o660) == []


def test_producer_creates_with_the_mode_asked_for(make_segment) -> None:
    default, group = make_segment("mode"), make_segment("mode")
    dmxp.Producer(0, capacity=CAPACITY, segment=default, size=SMALL_SEGMENT).close()
    dmxp.Producer(0, capacity=CAPACITY, segment=group, size=SMALL_SEGMENT, mode=0o660).close()
    assert mode_of(default) == 0o600
    assert mode_of(group) == 0o660


def test_a_segment_narrower_than_the_mode_is_accepted(segment: str) -> None:
    dmxp.Producer(0, capacity=CAPACITY, segment=segment, size=SMALL_SEGMENT).close()
    os.chmod(dmxp.shm_path(segment), 0o640)
    with pytest.raises(dmxp.UntrustedError):
        dmxp.Consumer(0, segment=segment)
    with dmxp.Consumer(0, segment=segment, mode=0o660) as consumer:
        assert consumer.receive() is None


# --- Arguments --------------------------------------------------------------------------------


@pytest.fixture
def bad_names() -> Iterator[list[str]]:
    names = [
        unique_segment_name("nl") + "\nx",
        unique_segment_name("del") + "\x7fx",
        unique_segment_name("esc") + "\x1b[2J",
    ]
    yield names
    # Only if a name got through: remove what it made.
    for name in names:
        try:
            os.unlink(dmxp.shm_path(name))
        except OSError:
            pass


def test_names_with_control_characters_are_invalid(bad_names: list[str]) -> None:
    for name in bad_names:
        with pytest.raises(dmxp.InvalidInputError):
            dmxp.Producer(0, capacity=CAPACITY, segment=name, size=SMALL_SEGMENT)
        with pytest.raises(dmxp.InvalidInputError):
            dmxp.Consumer(0, segment=name)
        with pytest.raises(dmxp.InvalidInputError):
            dmxp.peers(name)
        assert not os.path.exists(dmxp.shm_path(name))


def test_trust_arguments_are_checked(segment: str) -> None:
    dmxp.Producer(0, capacity=CAPACITY, segment=segment, size=SMALL_SEGMENT).close()
    for bad in ("65534", b"1", 3.0, [1, "2"], [-1], 1 << 32, object()):
        with pytest.raises(dmxp.InvalidInputError, match="trust_owner"):
            dmxp.Consumer(0, segment=segment, trust_owner=bad)
    with pytest.raises(dmxp.InvalidInputError, match="at most 4"):
        dmxp.Consumer(0, segment=segment, trust_owner=[1, 2, 3, 4, 5])
    for bad in (0o1000, 0o4600, -1):
        with pytest.raises(dmxp.InvalidInputError, match="mode"):
            dmxp.Consumer(0, segment=segment, mode=bad)
    with pytest.raises(TypeError):
        dmxp.Consumer(0, segment, 5.0, 0.0, None, 65534)  # keyword-only
    # Up to four owners, as a list, a tuple or any iterable, and the default mode spelled out.
    with dmxp.Consumer(0, segment=segment, trust_owner=iter([1, 2, 3, 4]), mode=0o600):
        pass


# --- The example programs --------------------------------------------------------------------


def run_example(*argv: str) -> subprocess.CompletedProcess[str]:
    name, *rest = argv
    return subprocess.run(
        python_example(name) + rest, capture_output=True, text=True, timeout=120
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], program: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"{program}: "), lines
    assert "uid 65534" in lines[0] and "0666" in lines[0], lines


@needs_root
def test_example_programs_refuse_the_squatted_segment(squatted: str) -> None:
    before = digest(squatted)
    producer = run_example(
        "producer", "1", "1", str(CAPACITY), "--segment", squatted, "--size", str(SMALL_SEGMENT)
    )
    assert_one_line_refusal(producer, "producer")
    consumer = run_example("consumer", "1", str(SEEDED), "--segment", squatted, "--wait", "2")
    assert_one_line_refusal(consumer, "consumer")
    # One opt-in without the other is still refused.
    half = run_example(
        "consumer", "1", str(SEEDED), "--segment", squatted, "--wait", "2",
        "--trust-owner", str(NOBODY),
    )  # fmt: skip
    assert_one_line_refusal(half, "consumer")
    half = run_example(
        "producer", "1", "1", "--segment", squatted, "--mode", "0666",
    )  # fmt: skip
    assert_one_line_refusal(half, "producer")
    assert digest(squatted) == before


@needs_root
def test_example_programs_attach_with_both_opt_ins(squatted: str) -> None:
    trust = ["--trust-owner", "1234", "--trust-owner", str(NOBODY), "--mode", "0666"]
    consumer = run_example(
        "consumer", "1", str(SEEDED), "--segment", squatted, "--wait", "5", *trust
    )
    assert consumer.returncode == 0, consumer
    assert f"received {SEEDED} messages" in consumer.stdout, consumer.stdout
    producer = run_example(
        "producer", "1", str(SEEDED), str(CAPACITY), "--segment", squatted, "--full-wait", "5",
        "--trust-owner", str(NOBODY), "--mode", "0o666",
    )  # fmt: skip
    assert producer.returncode == 0, producer
    assert f"sent {SEEDED} messages" in producer.stdout, producer.stdout
    with dmxp.Consumer(0, segment=squatted, trust_owner=NOBODY, mode=0o666) as check:
        assert len(check.receive_batch(64)) == SEEDED


def test_example_programs_take_the_mode(segment: str) -> None:
    created = run_example(
        "producer", "1", "2", str(CAPACITY), "--segment", segment, "--size", str(SMALL_SEGMENT),
        "--mode", "660",
    )  # fmt: skip
    assert created.returncode == 0, created
    assert mode_of(segment) == 0o660
    refused = run_example("consumer", "1", "2", "--segment", segment, "--wait", "2")
    assert refused.returncode == 1, refused
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "0660" in refused.stderr, refused.stderr
    accepted = run_example("consumer", "1", "2", "--segment", segment, "--mode", "0660")
    assert accepted.returncode == 0, accepted
    bad = run_example("consumer", "1", "2", "--segment", segment, "--mode", "0999")
    assert bad.returncode == 2 and "octal" in bad.stderr, bad


def test_example_programs_report_a_bad_name_in_one_line(bad_names: list[str]) -> None:
    name = bad_names[0]
    for program, argv in (
        ("producer", ["1", "1", "--segment", name, "--size", str(SMALL_SEGMENT)]),
        ("consumer", ["1", "1", "--segment", name, "--wait", "1"]),
    ):
        result = run_example(program, *argv)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        # Escaped, never raw: the facade quotes the name and names the byte.
        assert "0x0a" in result.stderr and "\\n" in result.stderr, result.stderr
    assert not os.path.exists(dmxp.shm_path(name))
