"""Shared fixtures: unique shm segments, golden bytes, and the Rust programs to talk to."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import dmxp

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO = PYTHON_DIR.parents[1]
GOLDEN_BIN = REPO / "dmxp-nostd" / "tests" / "golden" / "segment_v1.bin"
GOLDEN_MD = REPO / "dmxp-nostd" / "tests" / "golden" / "segment_v1.md"
EXAMPLES = PYTHON_DIR / "examples"

# Segments the tests create are small: a few channels of small rings.
SMALL_SEGMENT = 4 << 20

_counter = itertools.count()


def unique_segment_name(tag: str = "t") -> str:
    return f"/dmxp_pytest_{os.getpid()}_{tag}_{next(_counter)}"


def remove_segment(name: str) -> None:
    try:
        dmxp.unlink_segment(name)
    except dmxp.NotFoundError:
        pass


@pytest.fixture
def segment() -> Iterator[str]:
    """A fresh, unused shm segment name, removed after the test."""
    name = unique_segment_name()
    yield name
    remove_segment(name)


@pytest.fixture
def make_segment() -> Iterator[Callable[[str], str]]:
    """Returns fresh segment names on demand; removes them all after the test."""
    names: list[str] = []

    def make(tag: str = "m") -> str:
        name = unique_segment_name(tag)
        names.append(name)
        return name

    yield make
    for name in names:
        remove_segment(name)


@pytest.fixture
def golden_bytes() -> bytes:
    return GOLDEN_BIN.read_bytes()


@pytest.fixture
def golden_copy(golden_bytes: bytes) -> Iterator[Callable[..., str]]:
    """Places (optionally patched) copies of the golden segment in /dev/shm.

    ``place(patches={offset: bytes, ...})`` writes the copy and returns its segment name.
    """
    names: list[str] = []

    def place(patches: dict[int, bytes] | None = None) -> str:
        data = bytearray(golden_bytes)
        for offset, value in (patches or {}).items():
            data[offset : offset + len(value)] = value
        name = unique_segment_name("golden")
        path = dmxp.shm_path(name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        names.append(name)
        return name

    yield place
    for name in names:
        remove_segment(name)


def _cargo() -> str:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        pytest.fail("cargo is needed to build the Rust side of the cross-process tests")
    return cargo


def cargo_build(args: list[str]) -> dict[str, str]:
    """Builds with cargo in the repository and returns {target name: executable path}."""
    result = subprocess.run(
        [_cargo(), "build", "--release", "--message-format=json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cargo build {' '.join(args)} failed:\n{result.stderr}")
    built = {}
    for line in result.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            built[message["target"]["name"]] = message["executable"]
    return built


@pytest.fixture(scope="session")
def rust_examples() -> dict[str, str]:
    """The Rust producer and consumer examples (same command lines as the Python ones)."""
    built = cargo_build(["-p", "dmxp", "--example", "producer", "--example", "consumer"])
    assert {"producer", "consumer"} <= built.keys(), built
    return built


@pytest.fixture(scope="session")
def rust_cli() -> str:
    """The Rust `dmxp` tool (package dmxp-cli), the project's validator for segments."""
    built = cargo_build(["-p", "dmxp-cli", "--bin", "dmxp"])
    assert "dmxp" in built, built
    return built["dmxp"]


def python_example(name: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / f"{name}.py")]
