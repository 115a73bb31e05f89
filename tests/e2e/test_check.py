"""`boxctl check`: the index against the folder and the server, bit rot, a damaged index and its repair."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Device
from tests.e2e.helpers import STAMP, assert_clean, one_line_error, pull, push, random_bytes, status

OLD_NS = 1_600_000_000_000_000_000  # an mtime far in the past: the index records it (never "racy")
COMMANDS = ("status", "push", "pull", "check")


def write_old(device: Device, rel: str, data: bytes | str) -> Path:
    """Write a file with an old mtime, so that the index keeps its stat and a stat check trusts it."""
    path = device.write(rel, data)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def rot(path: Path, offset: int = 10) -> None:
    """Change bytes in place, keeping size, inode and mtime: what bit rot looks like to a stat."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(4)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def check(device: Device, *args: str) -> tuple[int, dict]:
    result = device.run("check", "--json", *args, check=False)
    assert "Traceback" not in result.err, result.err
    return result.code, result.json()


@pytest.fixture
def laptop(make_device: object) -> Device:
    """One device with a box holding a few synced files with old mtimes."""
    a = make_device("laptop")  # type: ignore[operator]
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    write_old(a, "notes.txt", "my notes\n" * 20)
    write_old(a, "docs/report.txt", "quarterly report\n" * 50)
    write_old(a, "data.bin", random_bytes(300_000, 1))
    push(a)
    return a


def test_a_clean_folder_checks_clean(laptop: Device) -> None:
    code, doc = check(laptop, "--read-data")
    assert code == 0, doc
    assert doc["clean"] is True and doc["damaged"] is False
    assert doc["files_read"] == 3 and doc["bytes_read"] == len("my notes\n") * 20 + 50 * 17 + 300_000
    assert doc["behind"] == [] and doc["out_of_step"] == [] and doc["bit_rot"] == []
    assert doc["head"] == doc["cursor"] > 0
    text = laptop.run("-C", str(laptop.root), "check", cwd=laptop.config)  # -C from elsewhere, text output
    assert text.out.strip().splitlines()[-1].startswith("clean:")


def test_local_edits_and_remote_commits_are_differences(laptop: Device, make_device: object) -> None:
    write_old(laptop, "notes.txt", "my notes, edited\n")
    laptop.write("new.txt", "new")
    (laptop.root / "data.bin").unlink()
    code, doc = check(laptop)
    assert code == 1, doc
    assert (doc["added"], doc["modified"], doc["deleted"]) == (["new.txt"], ["notes.txt"], ["data.bin"])
    assert doc["damaged"] is False and doc["clean"] is False
    text = laptop.run("check", check=False)
    assert text.code == 1 and "modified  notes.txt" in text.out and "differences found" in text.out

    # Another device's commit: this one is behind by what a pull would bring, which is not damage.
    desk = make_device("desk")  # type: ignore[operator]
    desk.run("clone", desk.server.url, "docs", str(desk.root), "--device", "desk", cwd=desk.config)
    push(laptop)
    code, doc = check(desk)
    assert code == 1 and doc["damaged"] is False
    assert doc["behind"] == ["data.bin", "new.txt", "notes.txt"] and doc["out_of_step"] == []
    pull(desk)
    assert check(desk)[0] == 0


def test_bit_rot_is_found_only_by_reading_and_repair_puts_the_synced_version_back(laptop: Device) -> None:
    good = laptop.read("data.bin")
    rot(laptop.root / "data.bin", offset=150_000)
    rotten = laptop.read("data.bin")
    assert_clean(laptop)  # a stat cannot see it
    assert check(laptop)[0] == 0

    code, doc = check(laptop, "--read-data")
    assert code == 9, doc
    assert [r["path"] for r in doc["bit_rot"]] == ["data.bin"] and doc["bit_rot"][0]["bad_blocks"] == 1
    assert doc["modified"] == [] and doc["damaged"] is True
    text = laptop.run("check", "--read-data", check=False)
    assert text.code == 9 and "damaged   data.bin" in text.out and "check --repair --read-data" in text.out

    repaired = laptop.run("check", "--repair", "--read-data", "--json").json()
    [fixed] = repaired["bit_rot"]
    assert fixed["error"] is None
    assert re.match(rf"^data \(damaged copy from laptop {STAMP}\)\.bin$", fixed["moved_to"]), fixed
    assert laptop.read("data.bin") == good
    assert laptop.read(fixed["moved_to"]) == rotten  # the damaged bytes are kept, never dropped
    code, doc = check(laptop, "--read-data")
    assert code == 1 and doc["added"] == [fixed["moved_to"]] and doc["bit_rot"] == []


def damage(index: Path, how: str) -> None:
    """Damage the index database file the way a disk or a person would."""
    assert not Path(f"{index}-wal").exists()  # every command checkpoints its changes into the file
    if how == "overwritten":
        data = bytearray(index.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 4096] = random_bytes(4096, 7)
        index.write_bytes(bytes(data))
    elif how == "truncated":
        with open(index, "r+b") as f:
            f.truncate(100)
    else:
        index.write_bytes(b"this is not a database\n" * 200)


@pytest.mark.parametrize("how", ["overwritten", "truncated", "garbage"])
def test_a_damaged_index_stops_every_command_with_one_line(laptop: Device, how: str) -> None:
    status(laptop)  # the stats snapshot is written: it must not hide the damage
    damage(laptop.root / ".box" / "index.db", how)
    for command in COMMANDS:
        result = laptop.run(command, check=False)
        line = one_line_error(result)
        assert result.code == 9, (command, result)
        assert "index" in line and "damaged" in line and "boxctl check --repair" in line, line
    code, doc = check(laptop)
    assert code == 9 and doc["damaged"] is True and "boxctl check --repair" in doc["index"]["damaged"]


def test_repair_rebuilds_the_index_and_loses_no_local_edit(laptop: Device, make_device: object) -> None:
    desk = make_device("desk")  # type: ignore[operator]
    desk.run("clone", desk.server.url, "docs", str(desk.root), "--device", "desk", cwd=desk.config)
    # Not yet pushed when the index breaks: an edit, a new file; meanwhile the desk commits a change.
    write_old(laptop, "notes.txt", "my notes, edited on the laptop\n")
    laptop.write("fresh.txt", "made on the laptop")
    desk.write("docs/report.txt", "report, rewritten on the desk\n")
    push(desk)
    before = {rel: laptop.read(rel) for rel in ("notes.txt", "fresh.txt", "data.bin", "docs/report.txt")}
    damage(laptop.root / ".box" / "index.db", "overwritten")

    result = laptop.run("check", "--repair", "--json").json()
    assert result["rebuilt"] is True and result["exit_code"] == 0
    assert Path(result["moved_to"]).name.startswith("index.db.damaged-") and Path(result["moved_to"]).exists()
    assert result["recorded"] == 1  # data.bin: the only file whose bytes are the server's head
    conflicts = {c["path"]: c["copy"] for c in result["pull"]["conflicts"]}
    assert set(conflicts) == {"notes.txt", "docs/report.txt"}
    # Every local byte is still here: the differing files are kept as conflicted copies, never overwritten.
    assert laptop.read(conflicts["notes.txt"]) == before["notes.txt"]
    assert laptop.read(conflicts["docs/report.txt"]) == before["docs/report.txt"]
    assert laptop.read("fresh.txt") == before["fresh.txt"] and laptop.read("data.bin") == before["data.bin"]
    assert laptop.read("docs/report.txt") == b"report, rewritten on the desk\n"

    st = status(laptop)
    assert st["added"] == sorted(["fresh.txt", *conflicts.values()]) and st["modified"] == st["deleted"] == []
    assert st["remote_waiting"] == 0
    assert pull(laptop)["written"] == []  # the next pull overwrites nothing
    push(laptop)
    pull(desk)
    assert desk.read(conflicts["notes.txt"]) == before["notes.txt"] and desk.read("fresh.txt") == before["fresh.txt"]
    assert check(laptop, "--read-data")[0] == 0


def test_a_file_absent_from_the_index_but_different_on_both_sides_becomes_a_conflict(laptop: Device) -> None:
    """Why repair applies the pull's rules itself: with the cursor at the head, a path the index lacks but
    the server has is never brought by a pull, and a push of it is refused for ever (4). Repair keeps the
    local bytes as a conflicted copy, as a pull does with such a path."""
    write_old(laptop, "notes.txt", "edited here, not pushed\n")
    index = sqlite3.connect(laptop.root / ".box" / "index.db")
    with index:
        index.execute("DELETE FROM entries WHERE path = 'notes.txt'")
    index.close()
    assert laptop.run("push", check=False).code == 4
    assert pull(laptop)["written"] == pull(laptop)["conflicts"] == []  # no pull helps...
    assert laptop.run("push", check=False).code == 4  # ...so the push stays refused
    code, doc = check(laptop)
    assert code == 9
    assert [(o["path"], o["index_rev"]) for o in doc["out_of_step"]] == [("notes.txt", None)]

    result = laptop.run("check", "--repair", "--json").json()
    assert result["rebuilt"] is False and result["mended"] == ["notes.txt"]
    [conflict] = result["pull"]["conflicts"]
    assert laptop.read(conflict["copy"]) == b"edited here, not pushed\n"
    assert laptop.read("notes.txt") == b"my notes\n" * 20
    assert check(laptop)[1]["added"] == [conflict["copy"]]


def test_damage_inside_a_row_is_found_by_check(laptop: Device) -> None:
    """A byte changed inside a row leaves SQLite's pages sound: the entry disagreeing with itself shows it."""
    index = sqlite3.connect(laptop.root / ".box" / "index.db")
    with index:
        index.execute("UPDATE entries SET content_hash = 'ff' || substr(content_hash, 3) WHERE path = 'notes.txt'")
    index.close()
    code, doc = check(laptop)
    assert code == 9 and any("notes.txt" in p for p in doc["index"]["problems"]), doc
    result = laptop.run("check", "--repair", "--json").json()
    assert result["rebuilt"] is True and result["recorded"] == 3
    assert check(laptop, "--read-data")[0] == 0
    assert_clean(laptop)


def test_a_repair_cut_short_leaves_the_index_flagged_until_it_is_run_again(laptop: Device) -> None:
    laptop.write("local.txt", "not pushed")
    damage(laptop.root / ".box" / "index.db", "garbage")
    laptop.server.kill()
    cut = laptop.run("--retries", "0", "check", "--repair", check=False)
    assert cut.code == 6, cut  # the server is gone: no head to rebuild from
    line = one_line_error(laptop.run("status", check=False))
    assert "cut short" in line and "boxctl check --repair" in line
    laptop.server.start()
    result = laptop.run("check", "--repair", "--json").json()
    assert result["rebuilt"] is True and result["recorded"] == 3 and result["pull"]["conflicts"] == []
    st = status(laptop)
    assert st["added"] == ["local.txt"] and st["modified"] == st["deleted"] == []
    kept = [p for p in (laptop.root / ".box").glob("index.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 2  # both the damaged index and the one cut short


def test_repair_rebuilds_a_missing_index_at_the_head(laptop: Device) -> None:
    (laptop.root / ".box" / "index.db").unlink()
    result = laptop.run("check", "--repair", "--json").json()
    assert (result["rebuilt"], result["reason"], result["moved_to"], result["recorded"]) == (
        True, "it is missing", None, 3)
    code, doc = check(laptop)
    assert code == 0 and doc["cursor"] == doc["head"] == result["cursor"]
