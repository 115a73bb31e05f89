"""Small helpers shared by the end-to-end tests (plain functions; the fixtures live in tests/conftest.py)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from tests.conftest import Device, Result, ServerProc

STAMP = r"\d{4}-\d{2}-\d{2} \d{2}-\d{2}-\d{2}"


def push(device: Device, *args: str) -> dict[str, Any]:
    """`boxctl push --json`, parsed."""
    return device.run("push", "--json", *args).json()


def pull(device: Device) -> dict[str, Any]:
    """`boxctl pull --json`, parsed."""
    return device.run("pull", "--json").json()


def status(device: Device) -> dict[str, Any]:
    return device.run("status", "--json").json()


def commits(device: Device) -> list[dict[str, Any]]:
    """Every commit of the box, newest first (`boxctl log --json`)."""
    return device.run("log", "--json", "-n", "10000").json()["commits"]


def revisions(device: Device, path: str) -> list[dict[str, Any]]:
    """Every revision of one path, newest first (`boxctl log PATH --json`)."""
    return device.run("log", path, "--json", "-n", "10000").json()["revisions"]


def remote_paths(device: Device) -> dict[str, dict[str, Any]]:
    """What the server holds now (`boxctl ls --json`), as path -> entry."""
    return {e["path"]: e for e in device.run("ls", "--json").json()["entries"]}


def assert_clean(device: Device) -> None:
    st = status(device)
    assert (st["added"], st["modified"], st["deleted"]) == ([], [], []), st


def sync_file(a: Device, b: Device, rel: str, data: bytes | str) -> int:
    """Write `rel` on `a`, push it, pull it on `b`; return the commit seq."""
    a.write(rel, data)
    seq = push(a)["seq"]
    assert isinstance(seq, int)
    pull(b)
    assert b.read(rel) == (data.encode() if isinstance(data, str) else data)
    return seq


def packs(server: ServerProc) -> dict[str, int]:
    """Every pack the server's block store holds (files of the block folder, or objects of its bucket), as
    name -> size."""
    if server.shared is not None:
        return server.shared.objects()
    root = server.data / "blocks" / "packs"
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def conflict_copy_re(stem: str, device: str, ext: str) -> re.Pattern[str]:
    """The name of a conflicted copy: `NAME (conflicted copy from DEVICE YYYY-MM-DD HH-MM-SS).EXT`."""
    return re.compile(rf"^{re.escape(stem)} \(conflicted copy from {re.escape(device)} {STAMP}\){re.escape(ext)}$")


def one_line_error(result: Result) -> str:
    """Assert a failed run printed exactly one line on stderr and no traceback; return that line."""
    assert result.code != 0, result
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{result.err}"
    return lines[0]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` as relative path -> bytes (no .box/)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".box" or rel.startswith(".box/") or path.is_symlink() or not path.is_file():
            continue
        found[rel] = path.read_bytes()
    return found
