"""Both devices change the same path: no edit is ever dropped (DESIGN.md rules 3 and 4)."""

from __future__ import annotations

import pytest

from tests.conftest import Device
from tests.e2e.helpers import (
    assert_clean,
    commits,
    conflict_copy_re,
    one_line_error,
    pull,
    push,
    remote_paths,
    status,
    sync_file,
)


@pytest.mark.parametrize("first", ["laptop", "desk"])
def test_both_edit_same_file_keeps_conflicted_copy(two_devices: tuple[Device, Device], first: str) -> None:
    laptop, desk = two_devices
    winner, loser = (laptop, desk) if first == "laptop" else (desk, laptop)
    laptop.write("docs/report.txt", "original\n")
    laptop.write("Makefile", "all:\n")
    push(laptop)
    pull(desk)
    winner.write("docs/report.txt", f"edited on {winner.name}\n")
    winner.write("Makefile", f"all: {winner.name}\n")
    push(winner)
    loser.write("docs/report.txt", f"edited on {loser.name}, a different length\n")
    loser.write("Makefile", f"all: {loser.name}\n")

    pulled = pull(loser)
    # The remote version takes the name, the local edit is kept beside it.
    assert loser.read("docs/report.txt") == f"edited on {winner.name}\n".encode()
    pattern = conflict_copy_re("report", loser.name, ".txt")
    copies = [p for p in loser.files() if p.startswith("docs/") and pattern.match(p.split("/", 1)[1])]
    assert len(copies) == 1, sorted(loser.files())
    copy = copies[0]
    assert loser.read(copy) == f"edited on {loser.name}, a different length\n".encode()
    # A name without an extension gets the suffix at the end.
    make_copies = [p for p in loser.files() if conflict_copy_re("Makefile", loser.name, "").match(p)]
    assert len(make_copies) == 1, sorted(loser.files())
    assert loser.read(make_copies[0]) == f"all: {loser.name}\n".encode()
    assert loser.read("Makefile") == f"all: {winner.name}\n".encode()
    assert sorted(pulled["conflicts"], key=lambda c: c["path"]) == [
        {"path": "Makefile", "copy": make_copies[0]}, {"path": "docs/report.txt", "copy": copy}]

    # The copies are new files: the next push sends them, and they reach the other device.
    st = status(loser)
    assert sorted(st["added"]) == sorted([copy, make_copies[0]]) and st["modified"] == [] and st["deleted"] == []
    pushed = push(loser)
    assert sorted(pushed["added"]) == sorted([copy, make_copies[0]]) and pushed["modified"] == []
    pull(winner)
    assert winner.read(copy) == f"edited on {loser.name}, a different length\n".encode()
    assert winner.read("docs/report.txt") == f"edited on {winner.name}\n".encode()
    assert winner.files() == loser.files()
    assert_clean(winner)


def test_remote_delete_of_locally_edited_file_keeps_local(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "plan.txt", "plan v1\n")
    (a.root / "plan.txt").unlink()
    assert push(a)["deleted"] == ["plan.txt"]
    b.write("plan.txt", "plan v2, edited on desk\n")
    pulled = pull(b)
    assert b.read("plan.txt") == b"plan v2, edited on desk\n"
    assert pulled["deleted"] == [] and pulled["kept"] == ["plan.txt"]
    # The kept file is pushed again, and comes back on the device that deleted it.
    pushed = push(b)
    assert pushed["added"] == ["plan.txt"]
    pull(a)
    assert a.read("plan.txt") == b"plan v2, edited on desk\n"


def test_local_delete_of_remotely_edited_file_brings_remote_back(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "todo.txt", "todo v1\n")
    a.write("todo.txt", "todo v2, edited on laptop\n")
    push(a)
    (b.root / "todo.txt").unlink()
    pull(b)
    assert b.read("todo.txt") == b"todo v2, edited on laptop\n"
    assert_clean(b)
    assert push(b)["seq"] is None  # nothing left to push: the delete lost to the edit


def test_push_rejected_when_remote_moved_on(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    sync_file(a, b, "shared.txt", "base\n")
    a.write("shared.txt", "laptop edit\n")
    push(a)
    before = commits(a)

    b.write("shared.txt", "desk edit\n")
    b.write("unrelated.txt", "desk's other file\n")
    rejected = b.run("push", check=False)
    assert rejected.code == 4, rejected
    line = one_line_error(rejected)
    assert "pull" in line.lower(), line
    assert "Traceback" not in rejected.out

    # Nothing of that push was committed, not even the unrelated new file.
    assert commits(a) == before
    held = remote_paths(a)
    assert "unrelated.txt" not in held
    st = status(b)
    assert st["added"] == ["unrelated.txt"] and st["modified"] == ["shared.txt"]

    # Pull resolves it (conflicted copy) and the next push goes through.
    pull(b)
    assert b.read("shared.txt") == b"laptop edit\n"
    pushed = push(b)
    assert pushed["seq"] is not None and "unrelated.txt" in pushed["added"]
    assert any(conflict_copy_re("shared", "desk", ".txt").match(p) for p in pushed["added"]), pushed
