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
