#!/usr/bin/env python3
"""Checks that each workspace crate's `rust-version` tells the truth about its locked
dependencies: it must be at least the highest `rust-version` any crate it builds with
(normal and build dependencies, all features, as locked in Cargo.lock, for this host's
target: DMXP builds on Linux only) declares.

    scripts/check-msrv.py            # prints one line per crate, exits 1 on a lie

Only cargo's own metadata is read (`cargo metadata --locked`); no other toolchain is
installed. A dependency that declares no rust-version counts as no constraint.
"""

from __future__ import annotations

import json
import subprocess
import sys


def version_key(text: str | None) -> tuple[int, ...]:
    """`1.88` or `1.88.0` as a comparable tuple; None as the lowest version."""
    if not text:
        return ()
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))  # 1.88 == 1.88.0


def main() -> int:
    host = next(
        line.split(": ", 1)[1]
        for line in subprocess.run(
            ["rustc", "-vV"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        if line.startswith("host: ")
    )
    metadata = json.loads(
        subprocess.run(
            [
                "cargo", "metadata", "--format-version", "1", "--locked", "--all-features",
                "--filter-platform", host,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}

    def built_with(package_id: str) -> set[str]:
        """Every package `package_id` needs to build (not its dev-dependencies)."""
        seen: set[str] = set()
        stack = [package_id]
        while stack:
            current = stack.pop()
            for dep in nodes[current]["deps"]:
                kinds = {k["kind"] for k in dep["dep_kinds"]}
                # Dev-dependencies of the workspace crate itself do not count; those of
                # dependencies are never built.
                if kinds <= {"dev"}:
                    continue
                if dep["pkg"] not in seen:
                    seen.add(dep["pkg"])
                    stack.append(dep["pkg"])
        return seen

    lies = 0
    for member in metadata["workspace_members"]:
        package = packages[member]
        declared = package.get("rust_version")
        needed, by = (), None
        for dep_id in built_with(member):
            dep = packages[dep_id]
            if version_key(dep.get("rust_version")) > needed:
                needed, by = version_key(dep["rust_version"]), dep
        status = "ok"
        if needed > version_key(declared):
            status = "TOO LOW"
            lies += 1
        needed_text = ".".join(map(str, needed)) or "none"
        culprit = f" ({by['name']} {by['version']})" if by else ""
        print(
            f"{package['name']:12} rust-version {declared or 'unset':6} "
            f"dependencies need {needed_text}{culprit}: {status}"
        )
    if lies:
        print(f"check-msrv: {lies} crate(s) declare a rust-version their dependencies do not build with")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
