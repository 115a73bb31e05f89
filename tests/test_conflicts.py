"""Conflicted copies' names and the rename that never replaces anything (boxctl/conflicts.py, durable.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from boxctl.engine.conflicts import conflict_name, move_aside
from boxctl.local.durable import _rename_noreplace_portable, rename_noreplace

WHEN = time.mktime((2026, 11, 25, 10, 15, 0, 0, 0, -1))
RENAMES = [rename_noreplace, _rename_noreplace_portable]


def test_conflict_name_gets_a_counter_past_the_first() -> None:
    assert conflict_name("dir/report.txt", "laptop", WHEN) == \
        "dir/report (conflicted copy from laptop 2026-11-25 10-15-00).txt"
    assert conflict_name("dir/report.txt", "laptop", WHEN, 2) == \
        "dir/report (conflicted copy from laptop 2026-11-25 10-15-00 2).txt"
    assert conflict_name("Makefile", "desk", WHEN, 3) == "Makefile (conflicted copy from desk 2026-11-25 10-15-00 3)"


def test_two_conflicts_in_the_same_second_keep_both_copies(tmp_path: Path) -> None:
    (tmp_path / "report.txt").write_text("first local edit")
    first = move_aside(tmp_path, "report.txt", "laptop", WHEN)
    (tmp_path / "report.txt").write_text("second local edit")
    second = move_aside(tmp_path, "report.txt", "laptop", WHEN)
    assert first == conflict_name("report.txt", "laptop", WHEN)
    assert second == conflict_name("report.txt", "laptop", WHEN, 2)
    assert (tmp_path / first).read_text() == "first local edit"
    assert (tmp_path / second).read_text() == "second local edit"
    assert not (tmp_path / "report.txt").exists()


def test_a_folder_moves_aside_without_replacing_one(tmp_path: Path) -> None:
    taken = tmp_path / conflict_name("photos", "desk", WHEN)
    taken.mkdir()  # empty: a plain rename would replace it
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"jpg")
    copy = move_aside(tmp_path, "photos", "desk", WHEN)
    assert copy == conflict_name("photos", "desk", WHEN, 2)
    assert (tmp_path / copy / "a.jpg").read_bytes() == b"jpg" and taken.is_dir()


def test_move_aside_of_nothing_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        move_aside(tmp_path, "gone.txt", "desk", WHEN)


@pytest.mark.parametrize("rename", RENAMES, ids=["renameat2", "portable"])
def test_rename_noreplace_never_replaces(tmp_path: Path, rename: Callable[[Path, Path], None]) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for kind in ("file", "link", "dir"):
        for target in ("file", "dir"):
            for p in (src, dst):
                if p.is_dir() and not p.is_symlink():
                    os.rmdir(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
            if kind == "file":
                src.write_text("mine")
            elif kind == "link":
                src.symlink_to("nowhere")
            else:
                src.mkdir()
            if target == "file":
                dst.write_text("theirs")
            else:
                dst.mkdir()
            with pytest.raises(FileExistsError):
                rename(src, dst)
            assert src.exists() or src.is_symlink()
            assert dst.read_text() == "theirs" if target == "file" else dst.is_dir()


@pytest.mark.parametrize("rename", RENAMES, ids=["renameat2", "portable"])
def test_rename_noreplace_moves_files_links_and_folders(tmp_path: Path, rename: Callable[[Path, Path], None]) -> None:
    (tmp_path / "f").write_text("data")
    (tmp_path / "l").symlink_to("f")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inside").write_text("x")
    for name in ("f", "l", "d"):
        rename(tmp_path / name, tmp_path / f"{name}2")
        assert not os.path.lexists(tmp_path / name)
    assert (tmp_path / "f2").read_text() == "data"
    assert os.readlink(tmp_path / "l2") == "f"  # the link itself moved, not what it points to
    assert (tmp_path / "d2" / "inside").read_text() == "x"
