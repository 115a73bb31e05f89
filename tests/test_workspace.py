"""boxctl.local.workspace: walking a synced folder, .boxignore, safe paths, and crash-safe writes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxctl.errors import UsageError
from boxctl.local.durable import fsync_write
from boxctl.local.workspace import (
    IGNORE_FILE,
    TEMP_PREFIX,
    UnsafePath,
    Workspace,
    make_link,
    remove_path,
)


def put(root: Path, rel: str, data: bytes = b"data") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / ".box").mkdir()
    (r / ".box" / "config").write_text("{}")
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "victim.txt").write_bytes(b"do not touch")
    return o


# --- scan -----------------------------------------------------------------------------------


def test_scan_finds_files_folders_and_links(root: Path, outside: Path) -> None:
    put(root, "a.txt", b"12345")
    put(root, "dir/sub/b.bin", b"xy")
    os.chmod(root / "a.txt", 0o600)
    os.symlink("a.txt", root / "link-to-file")
    os.symlink(outside, root / "link-to-outside")  # a link is synced as a link, never followed
    found = Workspace(root).scan()
    assert set(found) == {"a.txt", "dir", "dir/sub", "dir/sub/b.bin", "link-to-file", "link-to-outside"}
    assert (found["a.txt"].kind, found["a.txt"].size, found["a.txt"].mode) == ("file", 5, 0o600)
    assert found["a.txt"].inode == os.stat(root / "a.txt").st_ino
    assert found["a.txt"].mtime_ns == os.stat(root / "a.txt").st_mtime_ns
    assert found["dir"].kind == "dir"
    assert (found["link-to-file"].kind, found["link-to-file"].target) == ("link", "a.txt")
    assert found["link-to-outside"].target == str(outside)
    assert not any(p.startswith("link-to-outside/") for p in found)


def test_scan_never_lists_the_box_folder_or_temp_files(root: Path) -> None:
    put(root, "keep.txt")
    temp = put(root, f"dir/{TEMP_PREFIX}abc123")
    ws = Workspace(root)
    found = ws.scan()
    assert set(found) == {"keep.txt", "dir"}
    assert ws.temps == [str(temp)]
    assert ws.is_ignored(".box") and ws.is_ignored(".box/index.db") and ws.is_ignored(f"x/{TEMP_PREFIX}1")


def test_scan_skips_names_that_are_no_box_path(root: Path) -> None:
    put(root, "ok.txt")
    put(root, "cafe\u0301.txt")  # NFD on disk
    put(root, "back\\slash.txt")
    put(root, "new\nline.txt")
    os.mkfifo(root / "fifo")
    ws = Workspace(root)
    found = ws.scan()
    assert set(found) == {"ok.txt"}
    skipped = dict(ws.skipped)
    assert set(skipped) == {"cafe\u0301.txt", "back\\slash.txt", "new\nline.txt", "fifo"}
    assert "NFC" in skipped["cafe\u0301.txt"]
    assert "not a regular file" in skipped["fifo"]


def test_scan_empty_folder(root: Path) -> None:
    assert Workspace(root).scan() == {}


# --- .boxignore -----------------------------------------------------------------------------


def test_boxignore_rules(root: Path) -> None:
    (root / IGNORE_FILE).write_text("# comment\n*.log\n!keep.log\nbuild/\n/top-only.txt\n**/cache\n")
    for rel in ["a.log", "keep.log", "src/b.log", "build/out.o", "src/build/x", "build.txt", "top-only.txt",
                "sub/top-only.txt", "deep/er/cache/file", "notes.txt"]:
        put(root, rel)
    ws = Workspace(root)
    found = ws.scan()
    files = {p for p, e in found.items() if e.kind == "file"}
    assert files == {IGNORE_FILE, "keep.log", "build.txt", "sub/top-only.txt", "notes.txt"}
    assert "build" not in found and "src/build" not in found and "deep/er/cache" not in found
    assert ws.is_ignored("build", is_dir=True)
    assert not ws.is_ignored("build")  # 'build/' only matches folders
    assert ws.is_ignored("x/y/z.log") and not ws.is_ignored("x/keep.log")


def test_no_boxignore_ignores_only_box_internals(root: Path) -> None:
    ws = Workspace(root)
    assert ws.ignore is None
    assert not ws.is_ignored("anything.log")


def test_unreadable_boxignore_is_a_usage_error(root: Path) -> None:
    (root / IGNORE_FILE).write_bytes(b"\xff\xfe not utf-8 \xff")
    with pytest.raises(UsageError, match=IGNORE_FILE):
        Workspace(root)


# --- stat -----------------------------------------------------------------------------------


def test_stat(root: Path) -> None:
    put(root, "f.txt", b"abc")
    (root / "d").mkdir()
    os.symlink("f.txt", root / "l")
    ws = Workspace(root)
    assert ws.stat("f.txt").kind == "file" and ws.stat("f.txt").size == 3
    assert ws.stat("d").kind == "dir"
    assert ws.stat("l").kind == "link" and ws.stat("l").target == "f.txt"
    assert ws.stat("nope") is None


# --- safe_path ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["..", "../x", "a/../../x", "a/..", "/etc/passwd", "/tmp", "a\x00b", "a\\..\\b",
                                  "", "a//b", "./a", "a/", "cafe\u0301", ".box/config", ".box",
                                  f"dir/{TEMP_PREFIX}x", "C:/x"])
def test_safe_path_refuses_escapes(root: Path, path: str) -> None:
    with pytest.raises(UnsafePath):
        Workspace(root).safe_path(path)
    with pytest.raises(UnsafePath):
        Workspace(root).safe_path(path, create_parents=True)


def test_safe_path_refuses_a_symlinked_parent(root: Path, outside: Path) -> None:
    os.symlink(outside, root / "escape")
    ws = Workspace(root)
    with pytest.raises(UnsafePath, match="escape"):
        ws.safe_path("escape/victim.txt")
    with pytest.raises(UnsafePath):
        ws.safe_path("escape/new/file.txt", create_parents=True)
    assert not (outside / "new").exists()


def test_safe_path_refuses_a_deeper_symlinked_parent(root: Path, outside: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    os.symlink(outside, root / "a" / "b" / "c")
    with pytest.raises(UnsafePath):
        Workspace(root).safe_path("a/b/c/d/e.txt", create_parents=True)
    assert list(outside.iterdir()) == [outside / "victim.txt"]


def test_safe_path_refuses_a_symlink_to_a_folder_inside(root: Path) -> None:
    (root / "real").mkdir()
    os.symlink("real", root / "alias")
    with pytest.raises(UnsafePath):
        Workspace(root).safe_path("alias/f.txt")


def test_safe_path_refuses_a_file_as_parent(root: Path) -> None:
    put(root, "plain")
    with pytest.raises(UnsafePath):
        Workspace(root).safe_path("plain/f.txt", create_parents=True)


def test_safe_path_creates_parents_only_when_asked(root: Path) -> None:
    ws = Workspace(root)
    assert ws.safe_path("x/y/z.txt") == root / "x" / "y" / "z.txt"
    assert not (root / "x").exists()
    assert ws.safe_path("x/y/z.txt", create_parents=True) == root / "x" / "y" / "z.txt"
    assert (root / "x" / "y").is_dir()
    assert not (root / "x" / "y" / "z.txt").exists()


# --- fsync_write ----------------------------------------------------------------------------


def temps_in(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_fsync_write_writes_mode_and_mtime(root: Path) -> None:
    final = root / "new.txt"
    mtime = 1_700_000_000_123_456_789
    fsync_write(root, final, [b"hello ", b"world"], 0o640, mtime)
    assert final.read_bytes() == b"hello world"
    st = os.stat(final)
    assert st.st_mode & 0o777 == 0o640
    assert st.st_mtime_ns == mtime
    assert temps_in(root) == []


def test_fsync_write_is_atomic_while_writing(root: Path) -> None:
    final = put(root, "doc.txt", b"old version")
    seen: list[tuple[bytes, list[str]]] = []

    def chunks() -> Iterator[bytes]:
        for part in (b"new ", b"version ", b"here"):
            seen.append((final.read_bytes(), temps_in(root)))  # what a reader sees mid-write
            yield part

    fsync_write(root, final, chunks(), 0o644, 1_700_000_000_000_000_000)
    assert all(content == b"old version" for content, _ in seen)
    assert all(len(temps) == 1 for _, temps in seen)
    assert final.read_bytes() == b"new version here"
    assert temps_in(root) == []


def test_fsync_write_failure_leaves_the_old_file_and_no_temp(root: Path) -> None:
    final = put(root, "doc.txt", b"old version")

    def broken() -> Iterator[bytes]:
        yield b"half of the new "
        raise OSError("download broke off")

    with pytest.raises(OSError, match="broke off"):
        fsync_write(root, final, broken(), 0o644, 0)
    assert final.read_bytes() == b"old version"
    assert temps_in(root) == []
    with pytest.raises(OSError):
        fsync_write(root, root / "absent.txt", broken(), 0o644, 0)
    assert not (root / "absent.txt").exists()
    assert temps_in(root) == []


def test_fsync_write_replaces_a_symlink_instead_of_writing_through_it(root: Path, outside: Path) -> None:
    os.symlink(outside / "victim.txt", root / "trap.txt")
    fsync_write(root, root / "trap.txt", [b"mine"], 0o644, 0)
    assert not (root / "trap.txt").is_symlink()
    assert (root / "trap.txt").read_bytes() == b"mine"
    assert (outside / "victim.txt").read_bytes() == b"do not touch"


# --- links and removal ----------------------------------------------------------------------


def test_make_link_creates_and_replaces(root: Path) -> None:
    make_link(root / "l", "target-one")
    assert os.readlink(root / "l") == "target-one"
    make_link(root / "l", "target-two")
    assert os.readlink(root / "l") == "target-two"
    assert temps_in(root) == []


def test_remove_path(root: Path) -> None:
    f = put(root, "f")
    assert remove_path(f, "file") and not f.exists()
    assert remove_path(root / "gone", "file")  # already absent is fine
    full = put(root, "d/inner")
    assert not remove_path(root / "d", "dir")  # a folder that still holds something stays
    assert full.exists()
    full.unlink()
    assert remove_path(root / "d", "dir") and not (root / "d").exists()
    os.symlink(root, root / "link-to-root")
    assert remove_path(root / "link-to-root", "link") and root.is_dir()  # the link goes, not what it points to
    # A path that is no longer of the kind the pull saw was changed here since: kept, never followed.
    os.symlink(root, root / "link-to-root")
    assert not remove_path(root / "link-to-root", "dir")
    assert (root / "link-to-root").is_symlink() and root.is_dir()
    became_file = put(root, "was-a-folder")
    assert not remove_path(became_file, "dir") and became_file.exists()
    os.mkdir(root / "was-a-file")
    assert not remove_path(root / "was-a-file", "file") and (root / "was-a-file").is_dir()


def test_fsync_write_writes_everything(root: Path) -> None:
    piece = os.urandom(1 << 20)
    fsync_write(root, root / "big.bin", (piece for _ in range(19)), 0o644, 0)
    assert (root / "big.bin").read_bytes() == piece * 19


def test_a_file_or_link_where_a_folder_of_the_path_would_be(root: Path, tmp_path: Path) -> None:
    ws = Workspace(root)
    put(root, "x", b"a file")
    outside = tmp_path / "outside"
    put(outside, "inner/y")
    os.symlink(outside, root / "door")
    put(root, "real/sub/z")
    assert ws.blocking_parent("x/y/z") == "x" and ws.stat("x/y") is None
    assert ws.blocking_parent("door/inner/y") == "door"  # never looked through
    assert ws.blocking_parent("real/sub/z") is None and ws.blocking_parent("absent/a/b") is None
    # The pull decides about such paths first (boxctl/kinds.py); writing one is still refused.
    assert ws.safe_path("x/y", look_at_parents=False) == root / "x/y"
    for path in ("x/y", "door/inner/y"):
        with pytest.raises(UnsafePath):
            ws.safe_path(path, create_parents=True)
    with pytest.raises(UnsafePath):
        ws.safe_path("../x", look_at_parents=False)
