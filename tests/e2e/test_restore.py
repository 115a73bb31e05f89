"""Every version is kept: restore a file, a deleted file, a folder or the whole box; export elsewhere."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import Device
from tests.e2e.helpers import (
    assert_clean,
    commits,
    conflict_copy_re,
    one_line_error,
    pull,
    push,
    revisions,
    sync_file,
    tree_bytes,
)


def test_restore_file_to_older_rev(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    rev1 = sync_file(a, b, "essay.txt", "draft one\n")
    rev2 = sync_file(a, b, "essay.txt", "draft two\n")
    rev3 = sync_file(a, b, "essay.txt", "draft three, the best\n")
    assert rev1 < rev2 < rev3

    a.run("restore", "essay.txt", "--rev", str(rev1))
    assert a.read("essay.txt") == b"draft one\n"
    assert_clean(a)
    pull(b)
    assert b.read("essay.txt") == b"draft one\n"

    history = revisions(b, "essay.txt")
    assert [r["rev"] for r in history][1:] == [rev3, rev2, rev1]
    restored = history[0]
    assert restored["rev"] > rev3 and restored["op"] == "put"
    assert restored["content_hash"] == history[-1]["content_hash"]
    # The newer versions are still there to go back to, and a local edit not pushed yet is not lost:
    # it is kept as a conflicted copy.
    a.write("essay.txt", "draft four, not pushed yet\n")
    a.run("restore", "essay.txt", "--rev", str(rev3))
    files = a.files()
    assert files["essay.txt"] == b"draft three, the best\n"
    copies = [p for p in files if conflict_copy_re("essay", "laptop", ".txt").match(p)]
    assert len(copies) == 1 and files[copies[0]] == b"draft four, not pushed yet\n", sorted(files)


def test_restore_deleted_file(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    rev1 = sync_file(a, b, "keep/contract.pdf", b"%PDF-1.7 signed")
    (a.root / "keep/contract.pdf").unlink()
    deleted = push(a)["seq"]
    pull(b)
    assert not (b.root / "keep/contract.pdf").exists()

    a.run("restore", "keep/contract.pdf", "--rev", str(rev1))
    assert a.read("keep/contract.pdf") == b"%PDF-1.7 signed"
    pull(b)
    assert b.read("keep/contract.pdf") == b"%PDF-1.7 signed"

    history = revisions(a, "keep/contract.pdf")
    assert [(r["rev"], r["op"]) for r in history][1:] == [(deleted, "delete"), (rev1, "put")]
    assert history[0]["op"] == "put" and history[0]["rev"] > deleted


def test_restore_folder(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("site/index.html", "<h1>v1</h1>")
    a.write("site/css/main.css", "body{}")
    a.write("site/about.html", "about v1")
    a.write("other.txt", "not in the folder")
    good = push(a)["seq"]
    a.write("site/index.html", "<h1>broken</h1>")
    (a.root / "site/about.html").unlink()
    a.write("site/new.html", "added later")
    a.write("other.txt", "changed outside the folder")
    push(a)
    pull(b)

    a.run("restore", "site", "--rev", str(good))
    expected = {"site/index.html": b"<h1>v1</h1>", "site/css/main.css": b"body{}",
                "site/about.html": b"about v1", "other.txt": b"changed outside the folder"}
    assert a.files() == expected
    assert_clean(a)
    pull(b)
    assert b.files() == expected


def test_restore_whole_box_at_time(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("x.txt", "x v1")
    a.write("dir/y.txt", "y v1")
    first = push(a)["seq"]
    between = time.time()  # commit times are the server's time.time(), on this same machine
    a.write("x.txt", "x v2")
    (a.root / "dir/y.txt").unlink()
    a.write("z.txt", "z, added after")
    push(a)
    pull(b)
    assert b.files() == {"x.txt": b"x v2", "z.txt": b"z, added after"}

    result = a.run("restore", ".", "--at", f"@{between:.6f}", "--yes", "--json").json()
    assert result["from_seq"] == first
    expected = {"x.txt": b"x v1", "dir/y.txt": b"y v1"}
    assert a.files() == expected
    assert_clean(a)
    pull(b)
    assert b.files() == expected
    assert revisions(b, "z.txt")[0]["op"] == "delete"


def test_restore_to_dest_does_not_touch_box(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    a.write("report.txt", "report v1")
    a.write("data/one.csv", "1,2,3")
    a.write("data/sub/two.csv", "4,5,6")
    old = push(a)["seq"]
    a.write("report.txt", "report v2")
    a.write("data/one.csv", "7,8,9")
    push(a)
    log_before = commits(a)
    box_before = tree_bytes(a.root)

    single = tmp_path / "export" / "report-v1.txt"
    single.parent.mkdir()
    a.run("restore", "report.txt", "--rev", str(old), "--to", str(single))
    assert single.read_bytes() == b"report v1"

    folder = tmp_path / "export" / "folder"
    folder.mkdir()
    a.run("restore", "data", "--rev", str(old), "--to", str(folder))
    assert tree_bytes(folder) == {"data/one.csv": b"1,2,3", "data/sub/two.csv": b"4,5,6"}

    whole = tmp_path / "export" / "whole"
    a.run("restore", ".", "--rev", str(old), "--to", str(whole))
    assert tree_bytes(whole) == {"report.txt": b"report v1", "data/one.csv": b"1,2,3",
                                 "data/sub/two.csv": b"4,5,6"}

    # Bad arguments: a one-line error, and nothing changes either.
    neither = a.run("restore", "report.txt", check=False)
    assert neither.code == 2
    one_line_error(neither)
    missing = a.run("restore", "never-existed.txt", "--rev", str(old), check=False)
    assert missing.code != 0 and "never-existed.txt" in one_line_error(missing)
    future = a.run("restore", "report.txt", "--rev", "999", check=False)
    assert future.code != 0
    one_line_error(future)

    assert tree_bytes(a.root) == box_before
    assert_clean(a)
    assert commits(a) == log_before
