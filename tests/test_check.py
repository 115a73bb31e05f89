"""server_min.check and the store's damage handling, in process on a real data folder (Service, SQLite, packs)."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from box_common.codec import compressor
from box_common.frames import CODEC_DAMAGED, CODEC_RAW, CODEC_ZSTD, HEADER, Frame, encode_frames
from server_min.check import check
from server_min.errors import Damaged
from server_min.service import Caller, Service
from server_min.wiring import service_for_data

TEXT = b"compressible text, again and again. " * 500
NOISE = random.Random(1).randbytes(20_000)  # does not compress: stored raw


@dataclass
class Store:
    data: Path
    service: Service
    caller: Caller
    box: int

    def upload(self, *blocks: bytes) -> list[str]:
        frames = []
        for data in blocks:
            packed = compressor().compress(data)
            codec, payload = (CODEC_ZSTD, packed) if len(packed) < len(data) else (CODEC_RAW, data)
            frames.append(Frame(hashlib.sha256(data).hexdigest(), codec, payload))
        self.service.blocks.store_pack(self.caller, encode_frames(frames))
        return [f.sha256 for f in frames]

    def put(self, path: str, data: bytes) -> str:
        (sha,) = self.upload(data)
        self.service.commits.commit(self.caller, self.box, "", None,
                            [{"path": path, "op": "put", "size": len(data), "blocks": [sha]}])
        return sha

    def place(self, sha: str) -> tuple[Path, int, int]:
        block = self.service.meta.block(bytes.fromhex(sha))
        assert block is not None
        where = block.location
        return self.data / "blocks" / "packs" / where.pack[:2] / f"{where.pack}.pack", where.offset, where.length

    def flip(self, sha: str) -> None:
        pack, offset, stored = self.place(sha)
        raw = bytearray(pack.read_bytes())
        raw[offset + stored // 2] ^= 0xFF
        pack.write_bytes(bytes(raw))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    data = tmp_path / "data"
    service = service_for_data(data)
    caller = service.authenticate(service.add_user("alice"))
    box = int(service.boxes.create(caller, "docs", None)["id"])
    return Store(data, service, caller, box)


def test_a_whole_store_checks_whole(store: Store) -> None:
    store.put("a.txt", TEXT)
    store.put("b.bin", NOISE)
    report = check(store.data, read_data=True)
    assert report.whole, report.as_json()
    assert (report.entries, report.blocks, report.blocks_read, report.orphan_packs) == (2, 2, 2, 0)


@pytest.mark.parametrize("data", [TEXT, NOISE], ids=["zstd", "raw"])
def test_a_flipped_byte_is_damaged_remembered_missing_and_healed(store: Store, data: bytes) -> None:
    sha = store.put("f", data)
    store.flip(sha)
    assert check(store.data).whole  # sizes still fit
    assert not check(store.data, read_data=True).whole
    with pytest.raises(Damaged) as caught:
        store.service.blocks.read(store.caller, sha)
    assert caught.value.status == 500 and caught.value.body()["blocks"] == [sha]
    assert store.service.blocks.missing(store.caller, [sha]) == [sha]  # ask again for it, even from its uploader
    store.upload(data)  # a fresh copy replaces the damaged one
    assert store.service.blocks.read(store.caller, sha) == data
    assert store.service.blocks.missing(store.caller, [sha]) == []
    report = check(store.data, read_data=True)
    assert report.whole and report.orphan_bytes > 0  # the damaged copy's bytes are orphans now


def test_the_fetch_stream_marks_a_damaged_block_and_goes_on(store: Store) -> None:
    bad, good = store.put("bad", TEXT), store.put("good", NOISE)
    store.place(bad)[0].unlink()  # a flipped byte is found by the client, which then asks GET /blocks/{sha}
    body = b"".join(part for block in store.service.blocks.readable(store.caller, [bad, good])
                    for part in store.service.blocks.frame_bytes(block))
    digest, codec, length = HEADER.unpack_from(body, 0)
    assert (digest.hex(), codec) == (bad, CODEC_DAMAGED)
    assert b"damaged" in body[HEADER.size : HEADER.size + length]
    digest, codec, length = HEADER.unpack_from(body, HEADER.size + length)
    assert (digest.hex(), codec) == (good, CODEC_RAW)
    assert store.service.blocks.missing(store.caller, [bad, good]) == [bad]  # remembered


def test_a_missing_or_cut_pack_is_damaged(store: Store) -> None:
    cut, gone = store.put("cut", NOISE), store.put("gone", TEXT)
    pack, offset, stored = store.place(cut)
    with open(pack, "r+b") as f:
        f.truncate(offset + stored - 1)
    store.place(gone)[0].unlink()
    for sha in (cut, gone):
        with pytest.raises(Damaged):
            store.service.blocks.read(store.caller, sha)
    report = check(store.data)
    assert set(report.damaged_blocks) == {cut, gone}
    assert {lost["path"] for lost in report.lost} == {"cut", "gone"}


def test_repair_salvages_good_blocks_and_moves_the_pack_aside(store: Store) -> None:
    good, bad = store.upload(NOISE, TEXT)  # one pack, two blocks
    for path, sha, data in (("good", good, NOISE), ("bad", bad, TEXT)):
        store.service.commits.commit(store.caller, store.box, "", None,
                             [{"path": path, "op": "put", "size": len(data), "blocks": [sha]}])
    pack = store.place(bad)[0]
    store.flip(bad)
    report = check(store.data, read_data=True, repair=True)
    assert report.repaired["packs_moved"] == [pack.stem] and report.repaired["blocks_salvaged"] == 1
    assert not pack.exists() and (store.data / "blocks" / "damaged" / pack.name).exists()
    assert store.service.blocks.read(store.caller, good) == NOISE
    assert store.service.blocks.missing(store.caller, [good, bad]) == [bad]
    store.upload(TEXT)
    assert check(store.data, read_data=True).whole


def test_journal_entries_carry_a_checksum_checked_when_served(store: Store) -> None:
    store.put("docs/report.txt", TEXT)
    stage = store.service.commits.create_stage(store.caller, store.box)["stage"]
    (sha,) = store.upload(NOISE)
    store.service.commits.add_to_stage(store.caller, store.box, stage,
                               [{"path": "staged.bin", "op": "put", "size": len(NOISE), "blocks": [sha]}])
    store.service.commits.commit(store.caller, store.box, "", None, [], stage=stage)
    assert len(store.service.journal.changes(store.caller, store.box, 0, 100)["entries"]) == 2
    with sqlite3.connect(store.data / "meta.db") as db:
        db.execute("UPDATE journal SET path = 'docs/rep0rt.txt' WHERE path = 'docs/report.txt'")
    for read in (lambda: store.service.journal.changes(store.caller, store.box, 0, 100),
                 lambda: store.service.journal.tree(store.caller, store.box, None, None, ""),
                 lambda: store.service.journal.log(store.caller, store.box, "docs", 10, None),
                 lambda: store.service.journal.log(store.caller, store.box, None, 10, None)):
        with pytest.raises(Damaged, match="rep0rt"):
            read()
    report = check(store.data)
    assert [e["path"] for e in report.bad_entries] == ["docs/rep0rt.txt"]


def test_check_is_read_only_and_leaves_the_upload_temp_folder_alone(store: Store) -> None:
    store.put("a.txt", TEXT)
    upload = store.data / "blocks" / "tmp" / "in-flight.part"
    upload.write_bytes(b"an upload being written")
    orphan = store.data / "blocks" / "packs" / "ab" / ("ab" * 16 + ".pack")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"x" * 100)
    before = (store.data / "meta.db").read_bytes()
    report = check(store.data, read_data=True)
    assert report.whole and (report.orphan_packs, report.orphan_bytes) == (1, 100)
    assert upload.exists() and (store.data / "meta.db").read_bytes() == before


def test_a_damaged_database_is_reported(store: Store) -> None:
    store.put("a.txt", TEXT)
    store.service.meta.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = store.data / "meta.db"
    with sqlite3.connect(db) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'journal'").fetchone()[0]
    raw = bytearray(db.read_bytes())
    raw[(root - 1) * page : root * page] = b"\xa5" * page
    db.write_bytes(bytes(raw))
    report = check(store.data)
    assert not report.whole and report.database and report.database != ["ok"]


def _garble(store: Store, path: str, into: str) -> None:
    """Change the path of the journal entry of `path`, as a flipped byte on the disk would."""
    with sqlite3.connect(store.data / "meta.db") as db:
        db.execute("UPDATE journal SET path = ? WHERE path = ?", (into, path))


def test_repair_sets_a_damaged_entry_aside_and_puts_the_head_back_to_its_last_good_revision(store: Store) -> None:
    store.put("docs/report.txt", b"first version")  # seq 1
    (sha,) = store.upload(TEXT)  # seq 2: garbled below
    store.service.commits.commit(store.caller, store.box, "", None, [{"path": "docs/report.txt", "op": "put",
                                                              "size": len(TEXT), "blocks": [sha], "parent_rev": 1}])
    store.put("new.txt", NOISE)  # seq 3: garbled below, no earlier revision
    store.put("other.txt", b"untouched")  # seq 4
    _garble(store, "docs/report.txt", "docs/rep0rt.txt")  # both revisions: only seq 2 is checked as damaged...
    with sqlite3.connect(store.data / "meta.db") as db:  # ...so give seq 1 its name back
        db.execute("UPDATE journal SET path = 'docs/report.txt' WHERE seq = 1")
    _garble(store, "new.txt", "mew.txt")
    with pytest.raises(Damaged):
        store.service.journal.changes(store.caller, store.box, 0, 100)

    report = check(store.data, repair=True)
    assert not report.whole and {(e["seq"], e["path"]) for e in report.bad_entries} == {
        (2, "docs/rep0rt.txt"), (3, "mew.txt")}
    heads = {h["path"]: h for h in report.repaired["heads_restored"]}
    assert heads["docs/report.txt"] | {"box_id": 0} == {"box_id": 0, "path": "docs/report.txt", "lost_rev": 2,
                                                         "head_rev": 1, "present": True}
    assert (heads["new.txt"]["lost_rev"], heads["new.txt"]["head_rev"]) == (3, None)
    assert len(report.repaired["entries_set_aside"]) == 2

    # Pulls, ls and log go on: the lost versions are skipped, nothing else is.
    changes = store.service.journal.changes(store.caller, store.box, 0, 100)["entries"]
    assert [(e["seq"], e["path"]) for e in changes] == [(1, "docs/report.txt"), (4, "other.txt")]
    tree = store.service.journal.tree(store.caller, store.box, None, None, "")["entries"]
    assert [(e["path"], e["seq"]) for e in tree] == [("docs/report.txt", 1), ("other.txt", 4)]
    store.service.journal.log(store.caller, store.box, None, 10, None)
    store.service.journal.log(store.caller, store.box, "docs", 10, None)
    # A device that still holds a lost file pushes it again: as a new file, or as the next revision.
    (sha,) = store.upload(NOISE)
    store.service.commits.commit(store.caller, store.box, "", None,
                         [{"path": "new.txt", "op": "put", "size": len(NOISE), "blocks": [sha]}])
    (sha,) = store.upload(TEXT)
    store.service.commits.commit(store.caller, store.box, "", None, [{"path": "docs/report.txt", "op": "put",
                                                              "size": len(TEXT), "blocks": [sha], "parent_rev": 1}])
    with sqlite3.connect(store.data / "meta.db") as db:
        kept = db.execute("SELECT seq, path FROM damaged_entries ORDER BY seq").fetchall()
    assert kept == [(2, "docs/rep0rt.txt"), (3, "mew.txt")]  # kept, never served
    again = check(store.data, read_data=True)
    assert again.whole and again.set_aside == 2, again.as_json()


def test_repair_of_an_entry_whose_block_list_is_damaged(store: Store) -> None:
    store.put("a.txt", TEXT)
    with sqlite3.connect(store.data / "meta.db") as db:
        db.execute("UPDATE journal SET blocks = zeroblob(32) WHERE path = 'a.txt'")
    report = check(store.data, repair=True)
    assert [h["path"] for h in report.repaired["heads_restored"]] == ["a.txt"]
    assert store.service.journal.tree(store.caller, store.box, None, None, "")["entries"] == []
    assert check(store.data).whole


def test_the_check_reads_one_snapshot_while_commits_land(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit landing between the read of the block table and the read of the journal is not seen at all:
    without one snapshot its entry would name blocks the check did not see, reported missing (and with
    --repair marked damaged)."""
    import server_min.check as checker

    store.put("a.txt", TEXT)
    read_blocks = checker._present_blocks
    landed = []

    def then_a_commit_lands(conn: sqlite3.Connection) -> set[bytes]:
        present = read_blocks(conn)
        landed.append(store.put(f"landed-{len(landed)}.bin", random.Random(len(landed)).randbytes(5000)))
        return present

    monkeypatch.setattr(checker, "_present_blocks", then_a_commit_lands)
    report = check(store.data, repair=True)
    assert landed and report.whole and report.entries == 1, report.as_json()
    assert report.repaired == {} and store.service.blocks.missing(store.caller, landed) == []
    monkeypatch.undo()
    assert check(store.data, read_data=True).entries == 2


def test_a_zstd_block_declaring_more_than_a_block_is_damaged_without_inflating_it() -> None:
    import zstandard

    from box_common.frames import MAX_BLOCK
    from server_min.check import _block_fault

    plain = bytes(MAX_BLOCK + 1)  # zeros: a few hundred bytes once compressed, that declare 16 MiB + 1
    bomb = zstandard.ZstdCompressor(write_content_size=True).compress(plain)
    assert len(bomb) < 10_000
    reason = _block_fault(hashlib.sha256(plain).digest(), bomb, CODEC_ZSTD)
    assert "over the limit" in reason, reason


def test_admin_check_prints_a_report_for_people(store: Store) -> None:
    """`boxctl admin check` without --json: one line per finding, the repair, a one-line error (exit 9)."""
    import subprocess
    import sys

    def admin(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "boxctl", "admin", "check", "--data", str(store.data), *flags],
                              capture_output=True, text=True, timeout=60)

    store.put("a.txt", TEXT)
    sha = store.put("b.bin", NOISE)
    whole = admin("--read-data")
    assert whole.returncode == 0 and whole.stderr == "", whole
    lines = whole.stdout.splitlines()
    assert lines[0] == "checked 2 journal entries, 2 blocks, 2 read and hashed, 2 packs", lines
    assert lines[-1] == "the data folder is whole"

    store.flip(sha)
    found = admin("--read-data")
    assert found.returncode == 9, found
    assert f"block     {sha}: its SHA-256 does not match" in found.stdout
    assert "lost      b.bin (commit 2, box 1): 1 block(s)" in found.stdout
    [error] = found.stderr.strip().splitlines()
    assert "is damaged: 1 block(s) damaged, in 1 file version(s)" in error and "box-server check --repair" in error

    repaired = admin("--read-data", "--repair")
    assert repaired.returncode == 9 and "repaired  1 pack(s) moved to" in repaired.stdout, repaired
    assert "0 good block(s) kept, 1 marked damaged" in repaired.stdout
    after = admin()
    assert after.returncode == 9 and f"block     {sha}: pack" in after.stdout  # until a push heals it


def test_check_and_repair_while_commits_land_find_nothing(store: Store) -> None:
    """Checks with --repair run back to back while another thread commits: every one is whole, no good
    block is ever marked damaged, and the last check sees every commit. (A soak: the race it guards against
    is narrow; the test above lands a commit inside the window on purpose.)"""
    import threading

    stop = threading.Event()
    pushed: list[str] = []

    def commit_in_a_loop() -> None:
        rng = random.Random(3)
        while not stop.is_set():
            pushed.append(store.put(f"f{len(pushed)}.bin", rng.randbytes(3000)))

    writer = threading.Thread(target=commit_in_a_loop)
    writer.start()
    try:
        reports = []
        while len(reports) < 15 or len(pushed) < 20:
            reports.append(check(store.data, repair=True))
    finally:
        stop.set()
        writer.join()
    assert all(r.whole and r.repaired == {} for r in reports), [r.as_json() for r in reports if not r.whole][:1]
    assert len({r.entries for r in reports}) > 1  # commits did land while the checks ran
    assert store.service.blocks.missing(store.caller, pushed) == []
    assert check(store.data, read_data=True).entries == len(pushed)


def test_a_full_meta_db_answers_507_out_of_space_and_keeps_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_FULL on meta.db (a full disk under the database, here a page limit on every connection) is
    answered 507 {"error": "out_of_space"}, never a bare 500, and the commit left nothing behind."""
    from starlette.testclient import TestClient

    from server_min.api.app import create_app
    from server_min.meta.sqlite.conn import Connections

    service = service_for_data(tmp_path / "data")
    app = create_app(service)
    token = service.add_user("alice")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        box = client.post("/v1/boxes", json={"name": "b"}, headers=auth).json()["id"]
        connect = Connections._connect

        def full(self: Connections) -> sqlite3.Connection:
            conn = connect(self)
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: SQLITE_FULL
            return conn

        monkeypatch.setattr(Connections, "_connect", full)
        connections = service.meta
        connections._local = type(connections._local)()  # every thread connects again
        changes = [{"path": f"folder-{i:04}-{'x' * 140}", "op": "put", "kind": "dir"} for i in range(400)]
        answer = client.post(f"/v1/boxes/{box}/commits", json={"changes": changes}, headers=auth)
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"] == "out_of_space" and "disk is full" in answer.json()["message"]
        monkeypatch.undo()
    with sqlite3.connect(tmp_path / "data" / "meta.db") as db:
        assert db.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
        assert db.execute("SELECT head FROM boxes").fetchone()[0] == 0
