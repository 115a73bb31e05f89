"""`--dry-run` on pull, sync, restore and put says what would change and changes nothing: the folder, its
index and selection, and the server's log and blocks are compared before and after. And `restore .`
asks before it rewinds the whole box: on a terminal it asks, without one it needs --yes."""

from __future__ import annotations

import contextlib
import os
import pty
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import BOXCTL, Device
from tests.e2e.helpers import commits, conflict_copy_re, one_line_error, packs, pull, push, tree_bytes

Snapshot = tuple[dict[str, bytes], list[Any], list[Any], bytes, list[Any], dict[str, int]]


def snapshot(device: Device) -> Snapshot:
    """The folder's files, its index (every entry and every meta row), its config, and the server's log
    and blocks."""
    with contextlib.closing(sqlite3.connect(device.root / ".box" / "index.db")) as db:
        entries = db.execute("SELECT * FROM entries ORDER BY path").fetchall()
        meta = db.execute("SELECT * FROM meta ORDER BY key").fetchall()
    return (tree_bytes(device.root), entries, meta, (device.root / ".box" / "config").read_bytes(),
            commits(device), packs(device.server))


def diverge(a: Device, b: Device) -> None:
    """Remote changes for b of every kind: new, modified, deleted, a conflict, and a delete of a local edit."""
    a.write("keep.txt", "v1")
    a.write("gone.txt", "bye")
    a.write("both.txt", "base")
    a.write("edited-here.txt", "base")
    push(a)
    pull(b)
    a.write("new.txt", "new")
    a.write("keep.txt", "v2")
    (a.root / "gone.txt").unlink()
    a.write("both.txt", "a's edit")
    (a.root / "edited-here.txt").unlink()
    push(a)
    b.write("both.txt", "b's edit")
    b.write("edited-here.txt", "b's edit")
    b.write("mine.txt", "only on b")


def test_pull_and_sync_dry_run_change_nothing_and_say_what_a_pull_would(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    diverge(a, b)
    before = snapshot(b)
    preview = b.run("pull", "--dry-run", "--json").json()
    assert preview["dry_run"] is True
    assert set(preview["written"]) == {"new.txt", "keep.txt", "both.txt"}
    assert preview["deleted"] == ["gone.txt"] and preview["kept"] == ["edited-here.txt"]
    assert [c["path"] for c in preview["conflicts"]] == ["both.txt"]
    assert conflict_copy_re("both", "desk", ".txt").match(preview["conflicts"][0]["copy"])
    human = b.run("pull", "--dry-run").out
    assert "would write   new.txt" in human and "would delete  gone.txt" in human and "conflict      both.txt" in human
    synced = b.run("sync", "--dry-run", "--json").json()
    assert synced["dry_run"] and synced["pull"]["written"] == preview["written"]
    assert synced["push"]["dry_run"] and set(synced["push"]["added"]) == {"mine.txt"}
    assert set(synced["push"]["modified"]) == {"both.txt", "edited-here.txt"}
    assert "would push    mine.txt (added)" in b.run("sync", "--dry-run").out
    assert snapshot(b) == before

    done = pull(b)  # the real pull does what the preview said
    assert set(done["written"]) == set(preview["written"]) and done["deleted"] == preview["deleted"]
    assert [c["path"] for c in done["conflicts"]] == ["both.txt"] and done["kept"] == preview["kept"]


def test_pull_path_dry_run_leaves_the_selection_alone(make_device: Any) -> None:
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    a.write("docs/a.txt", "a")
    a.write("photos/p.jpg", "p")
    push(a)
    c = make_device("phone")
    c.run("clone", c.server.url, "docs", str(c.root), "--device", "phone", "--only", "docs", cwd=c.config)
    before = snapshot(c)
    preview = c.run("pull", "photos", "--dry-run", "--json").json()
    assert set(preview["written"]) == {"photos", "photos/p.jpg"}
    assert snapshot(c) == before and not (c.root / "photos").exists()


def test_restore_dry_run_lists_the_changes_and_commits_nothing(two_devices: tuple[Device, Device],
                                                               tmp_path: Path) -> None:
    a, _ = two_devices
    a.write("x.txt", "x v1")
    a.write("dir/y.txt", "y v1")
    old = push(a)["seq"]
    a.write("x.txt", "x v2")
    (a.root / "dir/y.txt").unlink()
    a.write("z.txt", "added after")
    push(a)
    before = snapshot(a)
    whole = a.run("restore", ".", "--rev", str(old), "--dry-run", "--json").json()
    assert whole["dry_run"] and whole["seq"] is None and whole["changes"] == 3
    assert (whole["added"], whole["modified"], whole["deleted"]) == (["dir/y.txt"], ["x.txt"], ["z.txt"])
    one = a.run("restore", "x.txt", "--rev", str(old), "--dry-run").out
    assert "would restore x.txt (modified)" in one
    dest = tmp_path / "export"
    exported = a.run("restore", ".", "--rev", str(old), "--to", str(dest), "--dry-run", "--json").json()
    assert exported["paths"] == ["dir/y.txt", "x.txt"] and not dest.exists()
    assert snapshot(a) == before


def test_put_dry_run_sends_nothing(make_device: Any, tmp_path: Path) -> None:
    ci = make_device("ci")
    here = tmp_path / "job"
    (here / "dist").mkdir(parents=True)
    (here / "dist" / "a.bin").write_bytes(os.urandom(300_000))
    ci.run("put", "dist", "alice/ci/old", "--create", cwd=here)
    log, blocks = ci.server.count_rows("commits"), packs(ci.server)
    preview = ci.run("put", "dist", "alice/ci/new", "--dry-run", "--json", cwd=here).json()
    assert preview["dry_run"] and set(preview["added"]) == {"new", "new/a.bin"} and preview["bytes_sent"] == 0
    assert "would put 2 change(s) into alice/ci/new" in ci.run("put", "dist", "alice/ci/new", "--dry-run", cwd=here).out
    assert ci.server.count_rows("commits") == log and packs(ci.server) == blocks
    missing = ci.run("put", "dist", "alice/nothing-yet/x", "--create", "--dry-run", cwd=here, check=False)
    assert missing.code == 7 and ci.run("put", "dist", "alice/ci/x", "--dry-run", cwd=here).code == 0


def with_terminal(device: Device, answer: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """boxctl with a terminal as its stdin (a pseudo-terminal fed `answer`), stdout and stderr captured."""
    main, side = pty.openpty()
    try:
        proc = subprocess.Popen([*BOXCTL, *args], cwd=device.root, env=device.env(), stdin=side,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.write(main, answer.encode())
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(main)
        os.close(side)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_restore_of_the_whole_box_asks_first(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("x.txt", "x v1")
    old = push(a)["seq"]
    a.write("x.txt", "x v2")
    a.write("y.txt", "y")
    push(a)
    before = snapshot(a)
    # No terminal (a script, cron): refused, naming --yes; nothing changes.
    refused = a.run("restore", ".", "--rev", str(old), check=False)
    assert refused.code == 2
    line = one_line_error(refused)
    assert "--yes" in line and "every device" in line and "2 path(s)" in line
    # A terminal: the question says how many paths change; anything but yes cancels.
    no = with_terminal(a, "n\n", "restore", ".", "--rev", str(old))
    assert no.returncode == 1 and b"2 path(s) change (1 modified, 1 deleted)" in no.stderr and b"[y/N]" in no.stderr
    assert snapshot(a) == before
    yes = with_terminal(a, "y\n", "restore", ".", "--rev", str(old))
    assert yes.returncode == 0, yes.stderr
    assert a.files() == {"x.txt": b"x v1"}
    # --yes skips the question; a single file needs none.
    a.write("x.txt", "x v3")
    push(a)
    a.run("restore", ".", "--rev", str(old), "--yes")
    assert a.files() == {"x.txt": b"x v1"}
    a.write("x.txt", "x v4")
    push(a)
    a.run("restore", "x.txt", "--rev", str(old))
    assert a.read("x.txt") == b"x v1"
    pull(b)
    assert b.files() == {"x.txt": b"x v1"}
