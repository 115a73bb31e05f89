"""What the command line prints: --json documents for scripts, plain messages, and clear errors."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Device
from tests.e2e.helpers import commits, one_line_error, pull, push, status, sync_file

STATUS_KEYS = {"added", "modified", "deleted", "remote_waiting", "cursor", "head", "skipped"}
PUSH_KEYS = {"seq", "dry_run", "added", "modified", "deleted", "blocks_sent", "bytes_sent", "bytes_plain",
             "skipped", "seconds"}
PULL_KEYS = {"written", "deleted", "conflicts", "kept", "refused", "cursor", "bytes_received"}
COMMIT_KEYS = {"seq", "time", "user", "device", "message", "changes", "paths"}
REVISION_KEYS = {"rev", "path", "op", "kind", "size", "content_hash", "time", "user", "device", "message"}


def test_status_json(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "mod.txt", "m1")
    sync_file(a, b, "del.txt", "d1")
    b.write("mod.txt", "m2, edited")
    (b.root / "del.txt").unlink()
    b.write("new/add.txt", "new")
    a.write("from-laptop.txt", "waiting for desk")
    head = push(a)["seq"]

    st = b.run("status", "--json").json()
    assert set(st) >= STATUS_KEYS
    assert st["added"] == ["new", "new/add.txt"]
    assert st["modified"] == ["mod.txt"]
    assert st["deleted"] == ["del.txt"]
    assert st["remote_waiting"] == 1
    assert st["head"] == head and isinstance(st["cursor"], int) and st["cursor"] < head
    assert st["skipped"] == []
    # Status changes nothing.
    assert b.read("mod.txt") == b"m2, edited"
    assert status(b) == st


def test_push_json_and_dry_run(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    sync_file(a, _, "old.txt", "old")
    a.write("old.txt", "old, changed")
    a.write("fresh.bin", b"\x00\x01" * 5000)
    before = commits(a)

    dry = a.run("push", "--dry-run", "--json").json()
    assert set(dry) >= PUSH_KEYS
    assert dry["dry_run"] is True and dry["seq"] is None
    assert dry["added"] == ["fresh.bin"] and dry["modified"] == ["old.txt"] and dry["deleted"] == []
    assert dry["blocks_sent"] == 0 and dry["bytes_sent"] == 0
    assert commits(a) == before

    real = a.run("push", "--json", "-m", "json push").json()
    assert set(real) >= PUSH_KEYS
    assert real["dry_run"] is False
    assert real["seq"] == before[0]["seq"] + 1
    assert real["added"] == ["fresh.bin"] and real["modified"] == ["old.txt"] and real["deleted"] == []
    assert real["blocks_sent"] == 2 and real["bytes_plain"] == 10_000 + len("old, changed")
    assert real["bytes_sent"] > 0
    assert real["skipped"] == [] and isinstance(real["seconds"], float | int)

    again = a.run("push", "--json").json()
    assert set(again) >= PUSH_KEYS
    assert again["seq"] is None and again["added"] == again["modified"] == again["deleted"] == []


def test_pull_json(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "gone.txt", "bye")
    a.write("dir/new.txt", "hello")
    (a.root / "gone.txt").unlink()
    seq = push(a)["seq"]

    pulled = b.run("pull", "--json").json()
    assert set(pulled) >= PULL_KEYS
    assert pulled["written"] == ["dir", "dir/new.txt"]
    assert pulled["deleted"] == ["gone.txt"]
    assert pulled["conflicts"] == [] and pulled["kept"] == [] and pulled["refused"] == []
    assert pulled["cursor"] == seq
    assert pulled["bytes_received"] > 0

    again = b.run("pull", "--json").json()
    assert set(again) >= PULL_KEYS
    assert again["written"] == again["deleted"] == [] and again["cursor"] == seq


def test_log_json(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("notes/a.txt", "aaa")
    first = push(a, "-m", "first commit")["seq"]
    pull(b)
    (b.root / "notes/a.txt").unlink()
    second = push(b, "-m", "desk deletes")["seq"]

    log = a.run("log", "--json").json()
    assert set(log) == {"commits"}
    assert [c["seq"] for c in log["commits"]] == [second, first]
    newest, oldest = log["commits"]
    assert set(newest) >= COMMIT_KEYS and set(oldest) >= COMMIT_KEYS
    assert (newest["message"], newest["device"], newest["user"]) == ("desk deletes", "desk", "alice")
    assert (oldest["message"], oldest["device"], oldest["changes"]) == ("first commit", "laptop", 2)
    assert oldest["paths"] == [{"path": "notes", "op": "put", "kind": "dir", "change": "added"},
                               {"path": "notes/a.txt", "op": "put", "kind": "file", "change": "added"}]
    assert newest["paths"] == [{"path": "notes/a.txt", "op": "delete", "kind": "file", "change": "deleted"}]
    assert oldest["time"] <= newest["time"]

    assert [c["seq"] for c in a.run("log", "--json", "-n", "1").json()["commits"]] == [second]

    revs = a.run("log", "notes/a.txt", "--json").json()
    assert set(revs) == {"revisions"}
    assert [(r["rev"], r["op"]) for r in revs["revisions"]] == [(second, "delete"), (first, "put")]
    for r in revs["revisions"]:
        assert set(r) >= REVISION_KEYS
    assert revs["revisions"][1]["size"] == 3 and revs["revisions"][1]["kind"] == "file"


def test_status_on_clean_tree(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "f.txt", "content")
    for device in (a, b):
        res = device.run("status")
        assert res.code == 0
        assert "no local changes" in res.out
        assert "0 remote change(s) waiting" in res.out
        assert res.err == ""
    # Touching a file without changing it is still clean.
    (a.root / "f.txt").touch()
    assert "no local changes" in a.run("status").out


def test_commands_outside_synced_folder_fail_clearly(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    elsewhere = tmp_path / "not-a-box"
    elsewhere.mkdir()
    for command in (["status"], ["push"], ["pull"], ["log"], ["restore", "x", "--rev", "1"]):
        res = a.run(*command, cwd=elsewhere, check=False)
        assert res.code == 5, (command, res)
        line = one_line_error(res)
        assert "not inside a synced folder" in line and str(elsewhere) in line, line
        assert res.out == ""
    assert list(elsewhere.iterdir()) == []


def test_paths_are_relative_to_current_folder_and_dash_c(two_devices: tuple[Device, Device], tmp_path: Path) -> None:
    a, _ = two_devices
    a.write("sub/inner.txt", "inner v1")
    a.write("top.txt", "top")
    first = push(a)["seq"]
    a.write("sub/inner.txt", "inner v2")
    push(a)
    # Like git: inside a subfolder, paths are relative to it.
    revs = a.run("log", "inner.txt", "--json", cwd=a.root / "sub").json()["revisions"]
    assert [r["path"] for r in revs] == ["sub/inner.txt", "sub/inner.txt"]
    a.run("restore", "inner.txt", "--rev", str(first), cwd=a.root / "sub")
    assert a.read("sub/inner.txt") == b"inner v1"
    # -C runs as if started in that folder.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = a.run("-C", str(a.root), "status", "--json", cwd=elsewhere)
    assert res.json()["added"] == [] and res.json()["modified"] == []
    assert a.run("-C", str(a.root / "sub"), "log", "inner.txt", "--json", cwd=elsewhere).json()["revisions"][0][
        "path"] == "sub/inner.txt"
