"""Damage injected into a server's data folder is always detected, typed (exit 9), survivable and healable.

Each kind of fault a disk or an operator can cause: a flipped byte in a pack (in a raw and in a zstd
block), a pack cut short or deleted, a flipped byte in a path or a block list of meta.db, a page of
meta.db overwritten. Each test says what detects it (admin check, a pull, a restore) and with which
exit code, and shows that a push from a device holding the data heals the store.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BOXCTL, Device, Result, ServerProc, free_port
from tests.e2e.helpers import one_line_error, push, random_bytes, remote_paths

# damage is injected into meta.db and the pack files of the embedded store.
pytestmark = pytest.mark.embedded_only

TEXT = ("the quick brown fox jumps over the lazy dog\n" * 2000).encode()  # compresses: stored as zstd
NOISE = random_bytes(150_000, 7)  # does not compress: stored raw


def admin_check(server: ServerProc, *flags: str) -> tuple[int, dict[str, Any]]:
    """`boxctl admin check --json` on the server's data folder: exit code and report."""
    proc = subprocess.run([*BOXCTL, "admin", "check", "--data", str(server.data), "--json", *flags],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def block_place(server: ServerProc, sha: str) -> tuple[Path, int, int, int]:
    """(pack file, offset, stored size, codec) of one stored block."""
    with sqlite3.connect(server.data / "meta.db") as db:
        pack, offset, stored, codec = db.execute(
            "SELECT pack, offset, stored_size, codec FROM blocks WHERE sha256 = ?", (bytes.fromhex(sha),)).fetchone()
    return server.data / "blocks" / "packs" / pack[:2] / f"{pack}.pack", offset, stored, codec


def flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x5A]))


def first_block(device: Device, path: str) -> str:
    return str(remote_paths(device)[path]["blocks"][0])


def pull_json(device: Device) -> tuple[Result, dict[str, Any]]:
    result = device.run("pull", "--json", check=False)
    return result, json.loads(result.out)


def test_flipped_bytes_in_raw_and_zstd_blocks(two_devices: tuple[Device, Device], server: ServerProc,
                                              make_device: Any) -> None:
    a, b = two_devices
    a.write("notes.txt", TEXT)
    a.write("photo.raw", NOISE)
    a.write("fine.txt", "untouched\n")
    push(a)
    zstd_sha, raw_sha = first_block(a, "notes.txt"), first_block(a, "photo.raw")
    for sha, codec in ((zstd_sha, 1), (raw_sha, 0)):
        pack, offset, stored, stored_codec = block_place(server, sha)
        assert stored_codec == codec
        flip_byte(pack, offset + stored // 2)

    # Sizes still fit: only reading the data finds it.
    assert admin_check(server)[0] == 0
    code, report = admin_check(server, "--read-data")
    assert code == 9 and not report["whole"]
    assert {d["sha256"] for d in report["damaged_blocks"]} == {zstd_sha, raw_sha}
    assert {lost["path"] for lost in report["lost"]} == {"notes.txt", "photo.raw"}

    # A pull applies every other file, names the damaged ones, exits 9 and does not move past them.
    result, doc = pull_json(b)
    assert result.code == 9, result
    assert "Traceback" not in result.err
    assert doc["written"] == ["fine.txt"]
    assert {d["path"] for d in doc["damaged"]} == {"notes.txt", "photo.raw"}
    assert doc["cursor"] == 0
    assert not (b.root / "notes.txt").exists() and b.read("fine.txt") == b"untouched\n"
    human = b.run("pull", check=False)
    assert human.code == 9
    assert "damaged   notes.txt" in human.err and "--repair-blocks" in human.err

    # A restore of the damaged file says which file, with exit 9.
    restore = a.run("restore", "notes.txt", "--rev", "1", "--to", str(a.root.parent / "out.txt"), check=False)
    assert restore.code == 9 and "notes.txt" in one_line_error(restore)

    # Healing: another device pushing the same bytes uploads them again (the server asks for the damaged
    # block instead of keeping its damaged copy), and --repair-blocks re-offers what the server lost.
    c = make_device("camera")
    c.root.mkdir()
    c.run("init", str(c.root), "--server", server.url, "--box", "camera", "--device", "camera")
    c.write("IMG_0001.raw", NOISE)
    assert push(c)["blocks_sent"] == 1
    repaired = a.run("push", "--repair-blocks", "--json").json()["repair"]
    assert (repaired["blocks_missing"], repaired["blocks_sent"]) == (1, 1)
    assert a.run("push", "--repair-blocks", "--json").json()["repair"]["blocks_missing"] == 0

    result, doc = pull_json(b)
    assert result.code == 0, result
    assert b.read("notes.txt") == TEXT and b.read("photo.raw") == NOISE
    assert doc["damaged"] == []
    assert admin_check(server, "--read-data")[0] == 0


def test_truncated_and_deleted_packs(two_devices: tuple[Device, Device], server: ServerProc) -> None:
    a, b = two_devices
    a.write("cut.bin", random_bytes(120_000, 1))
    push(a)
    a.write("gone.bin", random_bytes(90_000, 2))
    a.write("kept.txt", "still here\n")
    push(a)
    cut_pack, offset, stored, _ = block_place(server, first_block(a, "cut.bin"))
    gone_pack = block_place(server, first_block(a, "gone.bin"))[0]
    assert cut_pack != gone_pack
    os.truncate(cut_pack, offset + stored // 2)
    gone_pack.unlink()  # kept.txt was in the same push, so in the same pack

    code, report = admin_check(server)  # sizes alone tell
    assert code == 9
    assert {lost["path"] for lost in report["lost"]} == {"cut.bin", "gone.bin", "kept.txt"}

    # Reported as damage (exit 9), not as "server unreachable" (exit 6).
    result, doc = pull_json(b)
    assert result.code == 9, result
    assert {d["path"] for d in doc["damaged"]} == {"cut.bin", "gone.bin", "kept.txt"}

    # --repair moves the damaged pack aside and marks its blocks damaged; the store still serves.
    code, report = admin_check(server, "--repair")
    assert code == 9 and report["repaired"]["packs_moved"] == [cut_pack.stem]
    assert (server.data / "blocks" / "damaged" / cut_pack.name).exists() and not cut_pack.exists()

    repaired = a.run("push", "--repair-blocks", "--json").json()["repair"]
    assert repaired["blocks_sent"] == 3
    result, doc = pull_json(b)
    assert result.code == 0, result
    assert b.read("cut.bin") == random_bytes(120_000, 1) and b.read("gone.bin") == random_bytes(90_000, 2)
    code, report = admin_check(server, "--read-data")
    assert code == 0, report


def _flip_in_journal(server: ServerProc, path: str, column: str) -> None:
    """Flip one byte of `column` (path or blocks) of the journal entry of `path`, through SQLite."""
    with sqlite3.connect(server.data / "meta.db") as db:
        value = db.execute(f"SELECT {column} FROM journal WHERE path = ?", (path,)).fetchone()[0]
        raw = bytearray(value.encode() if isinstance(value, str) else value)
        raw[1] ^= 0x01
        new: str | bytes = raw.decode() if isinstance(value, str) else bytes(raw)
        db.execute(f"UPDATE journal SET {column} = ? WHERE path = ?", (new, path))


def test_flipped_path_and_block_list_in_meta_db(two_devices: tuple[Device, Device], server: ServerProc) -> None:
    a, b = two_devices
    a.write("documents/report.txt", "quarterly\n")
    a.write("budget.txt", "numbers\n")
    push(a)
    _flip_in_journal(server, "documents/report.txt", "path")  # 'documents' -> 'dncuments'

    # Never a file under another name: the pull stops with exit 9 naming the entry.
    result = b.run("pull", check=False)
    assert result.code == 9
    line = one_line_error(result)
    assert "dncuments/report.txt" in line and "damaged" in line
    assert not (b.root / "dncuments").exists()
    assert b.run("ls", check=False).code == 9
    code, report = admin_check(server)
    assert code == 9 and [e["path"] for e in report["bad_entries"]] == ["dncuments/report.txt"]

    _flip_in_journal(server, "dncuments/report.txt", "path")  # flipped back: whole again
    _flip_in_journal(server, "budget.txt", "blocks")
    assert b.run("pull", check=False).code == 9
    assert a.run("log", "budget.txt", check=False).code == 9
    code, report = admin_check(server)
    assert code == 9 and [e["path"] for e in report["bad_entries"]] == ["budget.txt"]


def test_repair_sets_a_garbled_entry_aside_and_the_box_goes_on(two_devices: tuple[Device, Device],
                                                                server: ServerProc) -> None:
    """A flipped byte in a path stops every pull, ls and log of the box (exit 9) until `admin check --repair`
    sets the entry aside: then pulls go on without it, nothing else is lost, and the device that holds the
    file pushes it again."""
    a, b = two_devices
    a.write("budget.txt", "numbers\n")
    push(a)
    a.write("documents/report.txt", "quarterly\n")
    a.write("notes.txt", "notes\n")
    push(a)  # commit 2: the report's only version, garbled below, and notes.txt
    _flip_in_journal(server, "documents/report.txt", "path")  # 'documents' -> 'dncuments'
    assert b.run("pull", check=False).code == 9
    assert b.run("ls", check=False).code == 9 and a.run("log", check=False).code == 9

    repair = subprocess.run([*BOXCTL, "admin", "check", "--data", str(server.data), "--repair"],
                            capture_output=True, text=True, timeout=120)
    assert repair.returncode == 9 and "Traceback" not in repair.stderr, repair  # damage was found: said so
    assert "entry 'dncuments/report.txt' of commit 2" in repair.stdout, repair.stdout
    assert "lost      documents/report.txt at revision 2" in repair.stdout, repair.stdout
    assert "no longer in the head" in repair.stdout, repair.stdout

    # The box goes on: a pull on another device applies everything else and skips the lost entry.
    result, pulled = pull_json(b)
    assert result.code == 0, result
    assert b.read("budget.txt") == b"numbers\n" and b.read("notes.txt") == b"notes\n"
    assert not (b.root / "dncuments").exists() and not (b.root / "documents" / "report.txt").exists()
    assert pulled["damaged"] == []
    assert set(remote_paths(b)) == {"budget.txt", "documents", "notes.txt"}  # the folder was its own entry
    assert a.run("log", "--json", check=False).code == 0
    assert admin_check(server)[0] == 0  # whole again; the entry is kept in damaged_entries, never served

    # The laptop still holds the lost version: its check finds it out of step, its repair makes it a new
    # file again, and a plain push brings it back.
    found = a.run("check", "--json", check=False)
    assert found.code == 9 and [o["path"] for o in found.json()["out_of_step"]] == ["documents/report.txt"]
    a.run("check", "--repair", "--json")
    push(a)
    assert pull_json(b)[0].code == 0
    assert b.read("documents/report.txt") == b"quarterly\n"
    code, report = admin_check(server, "--read-data")
    assert code == 0 and report["entries_set_aside"] == 1, report


def test_overwritten_page_of_meta_db(two_devices: tuple[Device, Device], server: ServerProc) -> None:
    a, b = two_devices
    for i in range(20):
        a.write(f"file{i}.txt", f"content {i}\n" * 50)
    push(a)
    server.kill(signal.SIGTERM)
    db_path = server.data / "meta.db"
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'journal'").fetchone()[0]
    with open(db_path, "r+b") as f:
        f.seek((root - 1) * page_size + 100)
        f.write(random_bytes(page_size - 200, 3))

    code, report = admin_check(server)
    assert code == 9 and report["database"] != ["ok"]
    server.start()  # a damaged database does not keep the server from starting
    result = b.run("pull", check=False)
    assert result.code == 9, result
    assert "damaged" in one_line_error(result)


def test_full_disk_answers_out_of_space_and_frees_the_upload(tmp_path: Path) -> None:
    """The server's data folder on a 24 MiB tmpfs: a 40 MB push fails fast and typed, the failed request
    leaves no byte behind, and once space is freed the push resumes with the blocks that did arrive."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    small = ServerProc(mount / "data", free_port())
    try:
        small.start()
        config = tmp_path / "config-filler"
        config.mkdir()
        device = Device("filler", tmp_path / "filler", config, small)
        device.login()
        device.root.mkdir()
        device.run("init", str(device.root), "--server", small.url, "--box", "big", "--device", "filler")
        huge = random_bytes(40 << 20, 11)
        device.write("huge.bin", huge)
        result = device.run("push", check=False, timeout=60)
        assert result.code == 8, result  # not retried for 30 s, not "server error 500", not "unreachable"
        assert "the server is out of space" in one_line_error(result)
        # Nothing of the failed requests stays: no temp file, no pack that no block row points to.
        assert list((small.data / "blocks" / "tmp").iterdir()) == []
        code, report = admin_check(small)
        assert code == 0 and (report["orphan_packs"], report["orphan_bytes"]) == (0, 0), report
        stored = report["blocks"]
        # Space freed: the push resumes, sending only the blocks that did not arrive.
        assert subprocess.run(["mount", "-o", "remount,size=96m", str(mount)]).returncode == 0
        done = push(device)
        total = len(remote_paths(device)["huge.bin"]["blocks"])
        assert 0 < stored < total and done["blocks_sent"] == total - stored, (done, stored, total)
        assert admin_check(small, "--read-data")[0] == 0
    finally:
        try:
            small.kill(signal.SIGTERM)
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
