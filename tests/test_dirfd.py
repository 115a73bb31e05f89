"""boxctl/dirfd.py: folders opened name by name without following links, cached and closed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from boxctl.engine.conflicts import move_aside
from boxctl.local import dirfd
from boxctl.local.dirfd import SafeRoot
from boxctl.local.durable import _rename_noreplace_portable, rename_noreplace, write_temp
from boxctl.local.workspace import UnsafePath, remove_path


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    return tmp_path / "outside"


def test_a_normal_path_is_made_and_written_through_descriptors(root: Path) -> None:
    with SafeRoot(root) as folders:
        fd, name = folders.parent("a/b/c.txt", create=True)
        temp = write_temp(name, [b"hello"], 0o640, 1_700_000_000_000_000_000, dir_fd=fd)
        os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        folders.verify("a/b")
        entry = folders.entry("a/b/c.txt")
    assert (root / "a" / "b" / "c.txt").read_bytes() == b"hello"
    assert entry is not None and (entry.kind, entry.size, entry.mode) == ("file", 5, 0o640)
    assert entry.mtime_ns == 1_700_000_000_000_000_000


def test_a_missing_folder_is_not_made_unless_asked(root: Path) -> None:
    with SafeRoot(root) as folders:
        with pytest.raises(FileNotFoundError):
            folders.folder("x/y")
        assert folders.lstat("x/y/z") is None
    assert not (root / "x").exists()


@pytest.mark.parametrize("depth", ["a", "a/b"])
def test_a_symlinked_component_is_refused(root: Path, outside: Path, depth: str) -> None:
    (root / depth).parent.mkdir(parents=True, exist_ok=True)
    (root / depth).symlink_to(outside, target_is_directory=True)
    with SafeRoot(root) as folders:
        with pytest.raises(UnsafePath):
            folders.parent("a/b/c/d.txt", create=True)
        with pytest.raises(UnsafePath):
            folders.lstat("a/b/c/d.txt")
    assert list(outside.iterdir()) == []


def test_a_file_as_component_is_refused(root: Path) -> None:
    (root / "plain").write_text("x")
    with SafeRoot(root) as folders, pytest.raises(UnsafePath):
        folders.folder("plain/sub", create=True)


def test_a_folder_swapped_after_it_was_opened_fails_verify(root: Path, outside: Path, tmp_path: Path) -> None:
    (root / "sub").mkdir()
    with SafeRoot(root) as folders:
        fd, name = folders.parent("sub/f.txt")
        folders.verify("sub")
        (root / "sub").rename(tmp_path / "away")
        (root / "sub").symlink_to(outside, target_is_directory=True)
        with pytest.raises(UnsafePath):
            folders.verify("sub")
        # The descriptor still names the real folder (moved away), never the link's target.
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    assert (tmp_path / "away" / "f.txt").exists() and list(outside.iterdir()) == []


def test_a_grandparent_moved_away_fails_verify(root: Path, tmp_path: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    with SafeRoot(root) as folders:
        folders.folder("a/b")
        (root / "a").rename(tmp_path / "away")
        (root / "a" / "b").mkdir(parents=True)  # look-alike folders at the same path
        with pytest.raises(UnsafePath):
            folders.verify("a/b")


def test_descriptors_are_closed(root: Path) -> None:
    before = open_fds()
    folders = SafeRoot(root)
    for i in range(20):
        folders.folder(f"d{i}/e", create=True)
    assert open_fds() == before + 41 == before + folders.open_count
    folders.close()
    assert open_fds() == before and folders.open_count == 0


def test_many_folders_keep_few_descriptors_and_a_reopened_one_must_be_the_same(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirfd, "MAX_OPEN", 8)
    before = open_fds()
    with SafeRoot(root) as folders:
        for i in range(30):
            folders.folder(f"top/d{i}", create=True)
            assert open_fds() - before <= 9
        folders.folder("top/d0")  # closed to make room, opened again: the same folder
        folders.verify("top/d0")
        (root / "top" / "d1").rename(tmp_path / "gone")
        (root / "top" / "d1").mkdir()
        with pytest.raises(UnsafePath):
            folders.folder("top/d1")  # another folder under the old name: refused, not taken for it
    assert open_fds() == before


def test_move_aside_refuses_a_swapped_parent(root: Path, outside: Path) -> None:
    (outside / "report.txt").write_text("not ours")
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        move_aside(root, "sub/report.txt", "desk")
    assert [p.name for p in outside.iterdir()] == ["report.txt"]


@pytest.mark.parametrize("rename", [rename_noreplace, _rename_noreplace_portable])
def test_rename_noreplace_inside_an_open_folder(root: Path, rename: Any) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "a").write_text("a")
    (root / "sub" / "b").write_text("b")
    with SafeRoot(root) as folders:
        fd = folders.folder("sub")
        with pytest.raises(FileExistsError):
            rename("a", "b", dir_fd=fd)
        rename("a", "c", dir_fd=fd)
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["b", "c"]
    assert (root / "sub" / "b").read_text() == "b" and (root / "sub" / "c").read_text() == "a"


def test_remove_path_inside_an_open_folder_removes_a_link_not_its_folder(root: Path, outside: Path) -> None:
    (outside / "f").write_text("kept")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "d").mkdir()
    with SafeRoot(root) as folders:
        fd = folders.folder("")
        # A link where the pull saw a folder changed since: kept, never followed (see test_workspace).
        assert not remove_path("link", "dir", fd) and (root / "link").is_symlink()
        assert remove_path("link", "link", fd) and remove_path("d", "dir", fd)
    assert list(root.iterdir()) == [] and (outside / "f").read_text() == "kept"
