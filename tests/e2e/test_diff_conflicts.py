"""`boxctl diff` (the folder against its last sync, or two commits) and `boxctl conflicts` (the conflicted
copies in the folder, each with the file it belongs to), through the real server and boxctl."""

from __future__ import annotations

from tests.conftest import Device
from tests.e2e.helpers import conflict_copy_re, one_line_error, pull, push, status


def test_diff_since_the_last_sync(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    a.write("notes.txt", "one\ntwo\nthree\n")
    a.write("photo.jpg", b"\xff\xd8\x00jpeg" * 100)
    a.write("old.txt", "going away\n")
    a.write("docs/keep.txt", "same\n")
    push(a)
    assert a.run("diff").out == "no changes\n"
    a.write("notes.txt", "one\n2\nthree\nfour")
    a.write("photo.jpg", b"\xff\xd8\x00jpeg" * 120)
    (a.root / "old.txt").unlink()
    a.write("new.txt", "hello\n")
    before = status(a)
    out = a.run("diff").out  # piped: the exact unified diff, as `patch` reads it
    assert ("--- a/notes.txt\tlast sync\n+++ b/notes.txt\tfolder\n@@ -1,3 +1,4 @@\n one\n-two\n+2\n three\n+four\n"
            "\\ No newline at end of file\n") in out
    assert "Binary files a/photo.jpg and b/photo.jpg differ (700 B -> 840 B)\n" in out
    assert "--- /dev/null\tlast sync\n+++ b/new.txt\tfolder\n@@ -0,0 +1 @@\n+hello\n" in out
    assert "--- a/old.txt\tlast sync\n+++ /dev/null\tfolder\n@@ -1 +0,0 @@\n-going away\n" in out
    assert "keep.txt" not in out
    listed = a.run("diff", "--json").json()
    assert listed["from"] == "last sync" and listed["to"] == "folder"
    assert {c["path"]: c["change"] for c in listed["changes"]} == {
        "notes.txt": "modified", "photo.jpg": "modified", "old.txt": "deleted", "new.txt": "added"}
    assert a.run("diff", "notes.txt", "--json").json()["changes"][0]["size_after"] == 16
    assert a.run("diff", "docs").out == "no changes\n"
    assert a.run("diff", "notes.txt", cwd=a.root).out.startswith("--- a/notes.txt")
    assert status(a) == before  # diff changes nothing


def test_diff_between_commits(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("plan.md", "# plan\nstep 1\n")
    a.write("tool.sh", "#!/bin/sh\n")
    first = push(a)["seq"]
    a.write("plan.md", "# plan\nstep 1\nstep 2\n")
    (a.root / "tool.sh").chmod(0o755)
    a.write("data/x.csv", "1,2\n")
    second = push(a)["seq"]
    (a.root / "data/x.csv").unlink()
    third = push(a)["seq"]
    pull(b)
    out = b.run("diff", "--rev", f"{first}..{second}").out
    assert f"--- a/plan.md\tcommit {first}\n+++ b/plan.md\tcommit {second}\n" in out and "+step 2\n" in out
    assert "tool.sh: mode 644 -> 755\n" in out and "+++ b/data/x.csv" in out
    changes = b.run("diff", "--rev", f"{first}..", "--json").json()
    assert (changes["from"], changes["to"]) == (first, third)
    assert {c["path"]: c["change"] for c in changes["changes"]} == {"plan.md": "modified", "tool.sh": "modified"}
    assert b.run("diff", "--rev", str(second), "--json").json()["changes"] == [
        {"path": "data/x.csv", "change": "deleted", "kind_before": "file", "kind_after": None, "size_before": 4,
         "size_after": None}]
    backwards = b.run("diff", "--rev", f"{second}..{first}", "plan.md").out
    assert "-step 2\n" in backwards
    for bad, code in (("x..y", 2), ("-1", 2), ("3..-2", 2), ("999", 7)):
        result = b.run("diff", "--rev", bad, check=False)
        assert result.code == code, (bad, result)
        one_line_error(result)
    missing = b.run("diff", "nothing-here", "--rev", str(first), check=False)
    assert missing.code == 7 and "nothing-here" in one_line_error(missing)
    assert b.run("diff", "nothing-here", check=False).code == 7


def test_conflicts_lists_each_copy_with_its_file(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    assert b.run("conflicts").out == "0 conflicted copies\n"
    a.write("docs/report.txt", "base")
    push(a)
    pull(b)
    a.write("docs/report.txt", "laptop's edit")
    push(a)
    b.write("docs/report.txt", "desk's edit")
    pull(b)
    listed = b.run("conflicts", "--json").json()["conflicts"]
    assert len(listed) == 1
    copy = listed[0]
    assert copy["path"] == "docs/report.txt" and copy["path_exists"] and copy["device"] == "desk"
    assert copy["copy"].startswith("docs/") and conflict_copy_re("report", "desk", ".txt").match(copy["copy"][5:])
    assert b.read(copy["copy"]) == b"desk's edit"
    human = b.run("conflicts").out
    assert f"{copy['copy']}\n    of docs/report.txt: kept from desk at {copy['time']}\n" in human
    assert "1 conflicted copy:" in human
    # A copy whose file was deleted since is still listed, and says so; other names are not copies.
    b.write("gone (conflicted copy from phone 2026-11-25 10-15-00 2).md", "kept")
    b.write("a (conflicted copy) note.txt", "not a copy")
    listed = {c["copy"]: c for c in b.run("conflicts", "--json").json()["conflicts"]}
    gone = listed["gone (conflicted copy from phone 2026-11-25 10-15-00 2).md"]
    assert gone["path"] == "gone.md" and not gone["path_exists"] and gone["device"] == "phone"
    assert len(listed) == 2
    assert "(no longer there)" in b.run("conflicts").out
