"""server_min.meta.sqlite: what only the SQLite store does (WAL, batches, numbered migrations, the index of
which paths hold which blocks); the MetaStore contract itself is tests/contract/test_meta.py."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from server_min.meta.base import SchemaOutdated, SchemaTooNew
from server_min.meta.records import NewEntry
from server_min.meta.sqlite import SqliteMeta, migrate
from server_min.meta.sqlite.conn import BATCH, WAL_TRIM_BYTES, batched
from server_min.service import Caller
from server_min.wiring import service_for_data

SIZES = (256 << 10, 1 << 20, 4 << 20)
FIXTURE = Path(__file__).parent / "fixtures" / "data-v0"


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def put(path: str, *blocks: bytes) -> NewEntry:
    return NewEntry(path, "put", "file", 10, 1, 0o644, b"".join(blocks), None)


@pytest.fixture
def meta(tmp_path: Path) -> SqliteMeta:
    return SqliteMeta(tmp_path / "meta.db")


@pytest.fixture
def alice(meta: SqliteMeta) -> int:
    return meta.add_user("alice", "hash-a")


def commit(meta: SqliteMeta, box: int, user: int, entries: list[NewEntry]) -> int:
    with meta.commit_tx(box) as tx:
        return tx.append(user, None, "m", entries).seq


def test_batched() -> None:
    assert [list(b) for b in batched([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(batched([], 3)) == []
    assert sum(len(b) for b in batched(list(range(BATCH * 2 + 1)))) == BATCH * 2 + 1


def test_wal_mode_and_full_sync(meta: SqliteMeta) -> None:
    assert meta.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert meta.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_new_database_is_at_the_latest_schema(meta: SqliteMeta) -> None:
    assert migrate.version(meta.conn) == migrate.latest() == len(migrate.migrations())
    assert migrate.upgrade(meta.conn) == []  # opening again applies nothing


def test_a_database_from_a_newer_box_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "meta.db"
    SqliteMeta(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {migrate.latest() + 1}")
    with pytest.raises(migrate.SchemaTooNew, match="newer"):
        SqliteMeta(db)


def test_without_upgrade_an_older_schema_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "meta.db"
    with pytest.raises(SchemaOutdated) as caught:
        SqliteMeta(db, upgrade=False)
    assert f"box-server migrate --meta sqlite:///{db.resolve()}" in str(caught.value)
    with sqlite3.connect(db) as conn:
        assert migrate.version(conn) == 0
    SqliteMeta(db).close()  # upgrade=True, as before: brought up to date
    SqliteMeta(db, upgrade=False).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {migrate.latest() + 1}")
    with pytest.raises(SchemaTooNew, match="newer"):
        SqliteMeta(db, upgrade=False)


def test_the_previous_release_s_data_folder_is_upgraded_and_serves_the_same_files(tmp_path: Path) -> None:
    """tests/fixtures/data-v0 was made by the server before numbered migrations (see make_data_v0.py)."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    tokens = json.loads((data / "tokens.json").read_text())
    with sqlite3.connect(data / "meta.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    service = service_for_data(data)
    assert migrate.version(service.meta.conn) == migrate.latest()  # type: ignore[attr-defined]
    tables = {r[0] for r in service.meta.conn.execute("SELECT name FROM sqlite_master")}  # type: ignore[attr-defined]
    assert "stats" not in tables and {"journal", "links", "stages"} <= tables
    alice = service.authenticate(tokens["alice"])
    laptop = service.authenticate(tokens["laptop"])
    assert laptop.device_id is not None
    (box,) = service.boxes.list(alice)
    assert (box["name"], box["head"]) == ("docs", 3)
    tree = service.journal.tree(alice, box["id"], None, None, "")
    assert [(e["path"], e["seq"]) for e in tree["entries"]] == [("a.txt", 2), ("dir", 1), ("dir/b.txt", 1)]
    files = {e["path"]: e for e in tree["entries"]}
    assert service.blocks.read(alice, files["a.txt"]["blocks"][0]) == b"hello, version two, longer\n"
    first = service.journal.tree(alice, box["id"], 1, None, "")
    old = {e["path"]: e for e in first["entries"]}
    assert old["ln"]["target"] == "a.txt"
    assert service.blocks.read(alice, old["a.txt"]["blocks"][0]) == b"hello, version one\n"
    log = service.journal.log(alice, box["id"], None, 10, None)["commits"]
    assert [(c["seq"], c["message"], c["device"]) for c in log] == [(3, "third", None), (2, "second", "laptop"),
                                                                    (1, "first", "laptop")]
    # bob's folder share, the link, the device's cursor: all still there
    bob = service.authenticate(tokens["bob"])
    (shared,) = service.boxes.list(bob)
    assert (shared["prefix"], shared["role"]) == ("dir", "viewer")
    assert [e["path"] for e in service.journal.tree(bob, box["id"], None, None, "")["entries"]] == ["b.txt"]
    assert [k["path"] for k in service.links.list(alice, None)] == ["dir"]
    assert service.accounts.list_devices(alice)[0]["boxes"][0]["cursor"] == 2
    # and it takes new commits on top
    done = service.commits.commit(Caller(alice.user_id, "alice", None), box["id"], "new", None,
                                  [{"path": "new-dir", "op": "put", "kind": "dir"}])
    assert done["seq"] == 4
    from server_min.check import check

    assert check(data, read_data=True).whole


def test_block_paths_index_every_path_that_held_a_block(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("a", digest(1)), put("b/c", digest(1))])
    assert meta.conn.execute("SELECT COUNT(*) FROM block_paths WHERE box_id = ?", (box,)).fetchone()[0] == 2
    stage = meta.create_stage(box, alice)
    many = [put(f"f{i:05d}", digest(i), digest(i + 1)) for i in range(BATCH * 3)]  # rows past one statement
    with meta.commit_tx(box) as tx:
        tx.add_staged(stage, many, [0] * len(many))
        tx.append_staged(stage, alice, None, "m")
    paths = meta.conn.execute("SELECT COUNT(*) FROM block_paths WHERE box_id = ?", (box,)).fetchone()[0]
    assert paths == 2 + 2 * len(many)
    for table in ("stages", "stage_changes", "stage_folders"):
        assert meta.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_a_duplicate_path_in_one_commit_is_all_or_nothing(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    with pytest.raises(sqlite3.IntegrityError), meta.commit_tx(box) as tx:
        tx.append(alice, None, "dup", [put("c", digest(3)), put("c", digest(4))])
    assert meta.head(box) == 0


def test_a_large_write_leaves_a_small_wal(meta: SqliteMeta, alice: int) -> None:
    # A big commit would otherwise leave its pages twice on disk (database and WAL) until much later.
    box = meta.create_box(alice, "big", SIZES)
    commit(meta, box, alice, [put(f"dir/file-{i:05d}-{'x' * 60}", digest(i)) for i in range(20_000)])
    wal = meta.path.with_name(meta.path.name + "-wal")
    assert wal.stat().st_size <= WAL_TRIM_BYTES
    assert meta.head(box) == 1


def test_a_reader_in_the_way_does_not_block_a_write(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "busy", SIZES)
    reader = sqlite3.connect(meta.path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM journal").fetchone()  # holds a snapshot: no TRUNCATE possible
    try:
        started = time.monotonic()
        commit(meta, box, alice, [put(f"f{i:05d}-{'y' * 60}", digest(i)) for i in range(20_000)])
        assert time.monotonic() - started < 30  # did not wait for the reader (the busy timeout is 60 s)
    finally:
        reader.rollback()
        reader.close()
    assert meta.head(box) == 1
