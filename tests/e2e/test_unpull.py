"""`boxctl unpull PATH [--keep]`: leaving a file or folder out of a selective sync again, through the real
server and boxctl: the local copy goes (only when nothing in it is unsynced), the path stops syncing
both ways, and `pull PATH` brings it back."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Device
from tests.e2e.helpers import one_line_error, pull, push, status


def owner_with(make_device: Any, files: dict[str, str]) -> Device:
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    for rel, data in files.items():
        a.write(rel, data)
    push(a)
    return a


def selection(device: Device) -> list[str]:
    return json.loads((device.root / ".box" / "config").read_text())["only"]


def test_unpull_removes_the_local_copy_and_stops_syncing(make_device: Any) -> None:
    a = owner_with(make_device, {"docs/a.txt": "a", "photos/2026/p.jpg": "p", "photos/2025/q.jpg": "q"})
    phone = make_device("phone")
    phone.run("clone", phone.server.url, "docs", str(phone.root), "--device", "phone", "--only", "docs",
              "--only", "photos", cwd=phone.config)
    phone.write("photos/2026/.boxignore-me", "never synced")  # stays: unpull removes only what is synced
    phone.write(".boxignore", ".boxignore-me\n")
    push(phone)
    result = phone.run("unpull", "photos/2026", "--json").json()
    assert result["removed"] == 1 and result["only"] == [".boxignore", "docs", "photos/2025"]
    assert result["kept"] == ["photos/2026"]  # the folder, which holds the ignored file
    assert selection(phone) == [".boxignore", "docs", "photos/2025"]
    assert not (phone.root / "photos/2026/p.jpg").exists() and (phone.root / "photos/2026/.boxignore-me").exists()
    assert phone.read("photos/2025/q.jpg") == b"q"
    st = status(phone)
    assert (st["added"], st["modified"], st["deleted"]) == ([], [], [])
    # It stays in the box; remote changes there no longer come here, the rest still does.
    assert "photos/2026/p.jpg" in {e["path"] for e in phone.run("ls", "--json").json()["entries"]}
    a.write("photos/2026/p.jpg", "p2")
    a.write("photos/2025/q.jpg", "q2")
    push(a)
    done = pull(phone)
    assert done["written"] == ["photos/2025/q.jpg"]
    assert not (phone.root / "photos/2026/p.jpg").exists()
    phone.run("pull", "photos/2026")  # back on demand
    assert phone.read("photos/2026/p.jpg") == b"p2"
    assert "photos/2026" in selection(phone)


def test_unpull_refuses_while_something_local_is_unsynced(make_device: Any) -> None:
    owner_with(make_device, {"docs/a.txt": "a", "photos/p.jpg": "p"})
    phone = make_device("phone")
    phone.run("clone", phone.server.url, "docs", str(phone.root), "--device", "phone", "--only", "docs",
              "--only", "photos", cwd=phone.config)
    phone.write("photos/p.jpg", "edited here")
    phone.write("photos/new.jpg", "new here")
    before = (selection(phone), phone.files())
    refused = phone.run("unpull", "photos", check=False)
    assert refused.code == 2
    line = one_line_error(refused)
    assert "2 change(s) not pushed" in line and "boxctl push" in line and "--keep" in line
    assert (selection(phone), phone.files()) == before
    # --keep: the local copy stays, no longer synced (an edit there is not pushed, a remote one not pulled).
    phone.run("unpull", "photos", "--keep")
    assert selection(phone) == ["docs"] and phone.read("photos/p.jpg") == b"edited here"
    phone.write("photos/p.jpg", "edited again")
    st = status(phone)
    assert "photos/p.jpg" not in st["modified"] and "photos/p.jpg" not in st["added"]


def test_unpull_in_a_folder_that_syncs_everything(make_device: Any) -> None:
    a = owner_with(make_device, {"top.txt": "t", "work/a/1.txt": "1", "work/b/2.txt": "2", "work/c.txt": "c"})
    desk = make_device("desk")
    desk.run("clone", desk.server.url, "docs", str(desk.root), "--device", "desk", cwd=desk.config)
    out = desk.run("unpull", "work/a").out
    assert "work/a is no longer synced on this device (1 file(s) removed here" in out
    assert selection(desk) == ["top.txt", "work/b", "work/c.txt"]
    assert desk.files() == {"top.txt": b"t", "work/b/2.txt": b"2", "work/c.txt": b"c"}
    a.write("work/a/1.txt", "1 again")
    a.write("work/b/2.txt", "2 again")
    push(a)
    pull(desk)
    assert desk.files() == {"top.txt": b"t", "work/b/2.txt": b"2 again", "work/c.txt": b"c"}


def test_unpull_bad_input(make_device: Any) -> None:
    owner_with(make_device, {"docs/a.txt": "a", "photos/p.jpg": "p"})
    phone = make_device("phone")
    phone.run("clone", phone.server.url, "docs", str(phone.root), "--device", "phone", "--only", "docs",
              cwd=phone.config)
    for args, words in ((["photos"], "not synced here"), (["docs"], "leave nothing"), (["."], "not the folder"),
                        (["../elsewhere"], "not inside")):
        result = phone.run("unpull", *args, check=False)
        assert result.code == 2, (args, result)
        assert words in one_line_error(result), (args, result.err)
    assert selection(phone) == ["docs"] and phone.read("docs/a.txt") == b"a"
