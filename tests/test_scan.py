"""Scanning a synced folder: what a walk finds, and what the engine makes of a scan (folders it could
not list)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from boxctl.config import BoxConfig
from boxctl.engine import Engine
from boxctl.errors import UsageError
from boxctl.local.index import IndexEntry
from boxctl.local.workspace import IGNORE_FILE, PARTIAL_PREFIX, TEMP_PREFIX, Workspace
from boxctl.transport import Transport
from tests.test_workspace import put


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A box folder holding a bit of everything a walk meets."""
    r = tmp_path / "root"
    put(r, ".box/config", b"{}")
    put(r, "top.txt")
    for top in ("docs", "photos"):
        for sub in range(5):
            for n in range(7):
                put(r, f"{top}/s{sub}/f{n}.txt", bytes([n]) * n)
            put(r, f"{top}/s{sub}/deeper/leaf.bin", b"x" * sub)
    put(r, "photos/s1/build/out.o")  # ignored by the rules below
    put(r, "photos/s2/app.log")  # ignored
    put(r, f"docs/s3/{TEMP_PREFIX}abc")  # a temp of a transfer cut off: reported for removal
    put(r, f"docs/s4/{PARTIAL_PREFIX}resume")  # a resumable pull's temp: listed too (boxctl.local.temps decides)
    put(r, "docs/s0/cafe\u0301.txt")  # not NFC: skipped with a reason
    os.symlink("../top.txt", r / "docs/s1/link")
    os.mkfifo(r / "photos/s3/fifo")
    (r / "empty").mkdir()
    put(r, IGNORE_FILE, b"*.log\nbuild/\n")
    # Written a minute ago: the index keeps no stat of a file written just now (it could still change
    # within the clock's resolution), and these must compare as unchanged.
    past = time.time_ns() - 60 * 10**9
    for folder, _, names in os.walk(r):
        for name in names:
            os.utime(os.path.join(folder, name), ns=(past, past), follow_symlinks=False)
    return r


def scan_of(ws: Workspace) -> tuple[dict, list, list, list]:
    found = ws.scan_stats()
    return found, sorted(ws.skipped), sorted(ws.temps), sorted(ws.unlisted)


def test_a_walk_finds_files_folders_links_temps_and_what_it_skips(root: Path) -> None:
    ws = Workspace(root)
    alone = scan_of(ws)
    assert "photos/s1/build" not in alone[0] and "photos/s2/app.log" not in alone[0]
    assert alone[0]["docs/s1/link"] == ("link", 0, os.lstat(root / "docs/s1/link").st_mtime_ns,
                                        os.lstat(root / "docs/s1/link").st_ino, 0o777, "../top.txt")
    assert len([p for p, s in alone[0].items() if s[0] == "file"]) == 2 * 5 * 8 + 2
    assert [why for _, why in alone[1]] == ["name is not in NFC form", "not a regular file, folder or symlink"]
    assert alone[2] == [str(root / f"docs/s3/{TEMP_PREFIX}abc"), str(root / f"docs/s4/{PARTIAL_PREFIX}resume")]


def test_a_folder_that_cannot_be_listed_is_noted(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open, real_scandir = os.open, os.scandir

    def refuse(path: object) -> None:
        if str(path).endswith("photos/s4") or path == "s4":
            raise PermissionError(13, "Permission denied")

    def guarded_open(path: object, *args: object, **kwargs: object) -> int:
        if kwargs.get("dir_fd") is not None and path == "s4" and os.readlink(f"/proc/self/fd/{kwargs['dir_fd']}") \
                .endswith("photos"):
            refuse(path)
        if kwargs.get("dir_fd") is None:
            refuse(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "scandir", lambda p=".": (refuse(p), real_scandir(p))[1])
    ws = Workspace(root)
    found = ws.scan_stats()
    assert ws.unlisted == ["photos/s4"]
    assert ("photos/s4", "cannot list: Permission denied") in ws.skipped
    assert found["photos/s4"][0] == "dir" and not any(p.startswith("photos/s4/") for p in found)
    assert "docs/s4/f1.txt" in found


def test_a_box_folder_that_cannot_be_listed_is_an_error_not_an_empty_folder(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    with pytest.raises(UsageError, match="cannot list the synced folder"):
        Workspace(gone).scan_stats()


# --- the engine's view ------------------------------------------------------------------------


def engine_for(root: Path) -> Engine:
    config = BoxConfig("http://127.0.0.1:9", 1, "box", "me", 1, "here", 256 << 10, 1 << 20, 4 << 20)
    return Engine(root, config, Transport(config.server, "token"))


def index_everything(engine: Engine) -> None:
    """Record the folder as synced just now (stats only: enough for the comparison)."""
    entries = [IndexEntry(p, kind, size, mtime, inode, mode, 1, "h", b"", target)
               for p, (kind, size, mtime, inode, mode, target) in engine.workspace.scan_stats().items()]
    with engine.index.transaction() as conn:
        engine.index.put(entries, conn)


def changed(engine: Engine) -> dict[str, list[str]]:
    sure, maybe = engine._candidates()
    out: dict[str, list[str]] = {"put": [], "delete": [], "maybe": sorted(c.path for c in maybe)}
    for c in sure:
        out[c.op].append(c.path)
    return {k: sorted(v) for k, v in out.items()}


def test_nothing_inside_a_folder_that_cannot_be_listed_counts_as_deleted(root: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(root)
    index_everything(engine)
    assert changed(engine) == {"put": [], "delete": [], "maybe": []}
    (root / "docs/s2/f3.txt").unlink()
    real_scandir = os.scandir
    locked = os.stat(root / "photos/s4").st_ino

    def scandir(p: object = ".") -> object:
        if os.fstat(p).st_ino == locked if isinstance(p, int) else os.stat(p).st_ino == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(p)

    monkeypatch.setattr(os, "scandir", scandir)
    # photos/s4 holds 8 indexed files this scan cannot see: they are unknown, not deleted.
    assert changed(engine) == {"put": [], "delete": ["docs/s2/f3.txt"], "maybe": []}
    engine.index.close()
