"""server_min.meta.sqlite: the metadata store (users, boxes, blocks, the journal)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from box_common.content import content_hash
from server_min.meta.sqlite import BATCH, WAL_TRIM_BYTES, SqliteMeta, batched

SIZES = (256 << 10, 1 << 20, 4 << 20)


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def put(path: str, *blocks: bytes, size: int = 10) -> dict[str, Any]:
    joined = b"".join(blocks)
    return {"path": path, "op": "put", "kind": "file", "size": size, "mtime_ns": 1, "mode": 0o644,
            "blocks": joined, "content_hash": content_hash("file", joined, None), "target": None}


def delete(path: str) -> dict[str, Any]:
    return {"path": path, "op": "delete", "kind": "file", "size": 0, "mtime_ns": 0, "mode": 0,
            "blocks": b"", "content_hash": "", "target": None}


@pytest.fixture
def meta(tmp_path: Path) -> SqliteMeta:
    return SqliteMeta(tmp_path / "meta.db")


@pytest.fixture
def alice(meta: SqliteMeta) -> int:
    return meta.add_user("alice", "hash-a")


def commit(meta: SqliteMeta, box: int, user: int, entries: list[dict[str, Any]], device: int | None = None,
           message: str = "m") -> int:
    with meta.write() as conn:
        seq, _ = meta.append_commit(conn, box, user, device, message, entries)
    return seq


def test_batched() -> None:
    assert [list(b) for b in batched([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(batched([], 3)) == []
    assert sum(len(b) for b in batched(list(range(BATCH * 2 + 1)))) == BATCH * 2 + 1


def test_wal_mode_and_full_sync(meta: SqliteMeta) -> None:
    assert meta.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert meta.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_users_and_tokens(meta: SqliteMeta, alice: int) -> None:
    assert meta.user_by_name("alice")["id"] == alice
    assert meta.user_by_name("nobody") is None
    row = meta.token("hash-a")
    assert (row["user_id"], row["name"], row["revoked"], row["device_id"]) == (alice, "alice", 0, None)
    assert meta.token("other") is None
    with pytest.raises(sqlite3.IntegrityError):
        meta.add_user("alice", "hash-b")
    assert meta.token("hash-b") is None  # the failed insert left nothing behind


def test_devices_and_cursors(meta: SqliteMeta, alice: int) -> None:
    dev = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    assert meta.device(dev)["name"] == "laptop"
    assert [d["id"] for d in meta.devices(alice)] == [dev]
    row = meta.token("hash-laptop")
    assert (row["user_id"], row["device_id"], row["revoked"]) == (alice, dev, 0)
    box = meta.create_box(alice, "docs", SIZES)
    meta.touch_device(dev, box, 5)
    meta.touch_device(dev, box, 3)  # a cursor never moves back
    row = meta.conn.execute("SELECT cursor FROM device_cursors WHERE device_id = ?", (dev,)).fetchone()
    assert row[0] == 5


def test_revoking_a_device_revokes_its_token_only(meta: SqliteMeta, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    laptop = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    desk = meta.add_device(alice, "desk", "desktop", "hash-desk")
    meta.revoke_device(bob, laptop)  # not bob's device: nothing happens
    assert meta.token("hash-laptop")["revoked"] == 0
    meta.revoke_device(alice, laptop)
    assert meta.token("hash-laptop")["revoked"] == 1
    assert meta.token("hash-desk")["revoked"] == 0
    assert meta.token("hash-a")["revoked"] == 0
    assert meta.device(laptop)["revoked"] == 1 and meta.device(desk)["revoked"] == 0


def test_boxes_and_members(meta: SqliteMeta, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    box = meta.create_box(alice, "docs", SIZES)
    row = meta.box(box)
    assert (row["name"], row["owner"], row["head"]) == ("docs", "alice", 0)
    assert (row["min_size"], row["avg_size"], row["max_size"]) == SIZES
    assert meta.box_by_name(alice, "docs")["id"] == box
    assert meta.box_by_name(bob, "docs") is None
    assert [(r["prefix"], r["role"]) for r in meta.memberships(box, alice)] == [("", "owner")]
    assert meta.memberships(box, bob) == []
    assert [r["id"] for r in meta.boxes_of(alice)] == [box]
    assert meta.boxes_of(bob) == []
    with pytest.raises(sqlite3.IntegrityError):
        meta.create_box(alice, "docs", SIZES)
    assert meta.box(9999) is None and meta.head(9999) == 0


def test_blocks_uploads_and_readability(meta: SqliteMeta, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    box = meta.create_box(alice, "docs", SIZES)
    d1, d2, d3 = digest(1), digest(2), digest(3)
    meta.add_blocks(bob, [(d1, 10, 8, 1, "pack1", 0), (d2, 20, 20, 0, "pack1", 8)], [d1, d2])
    with meta.read() as conn:
        stored = meta.existing_blocks(conn, [d1, d2, d3])
        assert set(stored) == {d1, d2}
        assert (stored[d2]["size"], stored[d2]["offset"], stored[d2]["pack"]) == (20, 8, "pack1")
        assert meta.readable_blocks(conn, bob, [d1, d2]) == {d1, d2}
        assert meta.readable_blocks(conn, alice, [d1, d2]) == set()  # stored, but not hers
    # Alice proves she holds d1 (the server kept its one copy): readable for her now, row unchanged.
    meta.add_blocks(alice, [(d1, 10, 99, 0, "other-pack", 0)], [d1])
    assert meta.block(d1)["pack"] == "pack1"
    with meta.read() as conn:
        assert meta.readable_blocks(conn, alice, [d1, d2]) == {d1}
    # Bob commits d2 into a box alice is a member of: then alice may read it through the box.
    bobs_box = meta.create_box(bob, "shared", SIZES)
    commit(meta, bobs_box, bob, [put("x", d2, size=20)])
    with meta.read() as conn:
        assert meta.readable_blocks(conn, alice, [d2]) == set()
    meta.conn.execute("INSERT INTO members (box_id, user_id, prefix, role) VALUES (?, ?, '', 'viewer')",
                      (bobs_box, alice))
    with meta.read() as conn:
        assert meta.readable_blocks(conn, alice, [d1, d2, d3]) == {d1, d2}
    assert box  # alice's own box exists all along


def test_many_blocks_cross_the_batch_size(meta: SqliteMeta, alice: int) -> None:
    digests = [digest(i) for i in range(BATCH * 2 + 7)]
    meta.add_blocks(alice, [(d, 1, 1, 0, "p", i) for i, d in enumerate(digests)], digests)
    with meta.read() as conn:
        assert len(meta.existing_blocks(conn, digests)) == len(digests)
        assert meta.readable_blocks(conn, alice, digests) == set(digests)


def test_append_commit_moves_head_and_files(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    d1 = digest(1)
    assert commit(meta, box, alice, [put("a", d1), put("b/c", d1)]) == 1
    assert commit(meta, box, alice, [delete("a"), put("d", d1)]) == 2
    assert meta.head(box) == 2
    with meta.read() as conn:
        heads = meta.heads_of(conn, box, ["a", "b/c", "d", "never"])
        assert meta.head_in(conn, box) == 2
    assert {p: (r["rev"], r["present"]) for p, r in heads.items()} == {"a": (2, 0), "b/c": (1, 1), "d": (2, 1)}
    assert meta.conn.execute("SELECT COUNT(DISTINCT sha256) FROM block_paths WHERE box_id = ?",
                             (box,)).fetchone()[0] == 1


def test_a_failed_commit_leaves_nothing(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("a", digest(1))])
    before = meta.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
    with pytest.raises(RuntimeError), meta.write() as conn:
        meta.append_commit(conn, box, alice, None, "doomed", [put("b", digest(2)), delete("a")])
        raise RuntimeError("the server died mid-commit")
    assert meta.head(box) == 1
    assert meta.conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == before
    assert meta.conn.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 1
    with meta.read() as conn:
        assert set(meta.heads_of(conn, box, ["a", "b"])) == {"a"}
    assert [r["path"] for r in meta.tree(box, 1, "")] == ["a"]
    # A duplicate path inside one commit violates the journal key: also all or nothing.
    with pytest.raises(sqlite3.IntegrityError), meta.write() as conn:
        meta.append_commit(conn, box, alice, None, "dup", [put("c", digest(3)), put("c", digest(4))])
    assert meta.head(box) == 1


def test_tree_at_every_seq(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    d1, d2 = digest(1), digest(2)
    commit(meta, box, alice, [put("a", d1), put("dir/x", d1), put("dir2/y", d1), put("dirz", d1)])
    commit(meta, box, alice, [put("a", d2), delete("dir/x")])
    commit(meta, box, alice, [put("dir/x", d2)])

    def tree(seq: int, prefix: str = "") -> dict[str, tuple[int, bytes]]:
        return {r["path"]: (r["seq"], bytes(r["blocks"])) for r in meta.tree(box, seq, prefix)}

    assert tree(0) == {}
    assert tree(1) == {"a": (1, d1), "dir/x": (1, d1), "dir2/y": (1, d1), "dirz": (1, d1)}
    assert tree(2) == {"a": (2, d2), "dir2/y": (1, d1), "dirz": (1, d1)}
    assert tree(3) == {"a": (2, d2), "dir/x": (3, d2), "dir2/y": (1, d1), "dirz": (1, d1)}
    assert tree(3, "dir") == {"dir/x": (3, d2)}  # not dir2/ nor dirz
    assert tree(1, "a") == {"a": (1, d1)}


def test_changes_are_paged_by_whole_commits(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put(f"one/{i}", digest(i)) for i in range(3)])
    commit(meta, box, alice, [put(f"two/{i}", digest(i)) for i in range(3)])
    commit(meta, box, alice, [put("three", digest(0))])
    rows, upto = meta.changes(box, 0, 4)
    assert upto == 1 and len(rows) == 3  # the second commit would not fit: never half of it
    rows, upto = meta.changes(box, 1, 4)
    assert upto == 3 and [r["seq"] for r in rows] == [2, 2, 2, 3]
    rows, upto = meta.changes(box, 0, 1)
    assert upto == 1 and len(rows) == 3  # at least one whole commit, even over the limit
    assert meta.changes(box, 3, 100) == ([], 3)


def test_history_time_and_counts(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    laptop = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    desk = meta.add_device(alice, "desk", "desktop", "hash-desk")
    start = time.time()
    commit(meta, box, alice, [put("f", digest(1)), put("g", digest(1))], device=laptop, message="one")
    commit(meta, box, alice, [delete("f")], device=desk, message="two")
    history = meta.path_history(box, "f", 10)
    assert [(r["seq"], r["op"], r["device"], r["message"]) for r in history] == [
        (2, "delete", "desk", "two"), (1, "put", "laptop", "one")]
    assert [r["seq"] for r in meta.commits(box, 10, None)] == [2, 1]
    assert [r["seq"] for r in meta.commits(box, 10, 2)] == [1]
    assert [r["path"] for r in meta.commit_paths(box, 1, 10)] == ["f", "g"]
    assert meta.seq_at(box, start - 1) == 0
    assert meta.seq_at(box, time.time() + 1) == 2
    assert meta.count_after(box, 0, None) == 3
    assert meta.count_after(box, 0, laptop) == 1  # a device does not wait for its own commits
    assert meta.count_after(box, 1, desk) == 0


def test_concurrent_commits_get_distinct_seqs(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                commit(meta, box, alice, [put(f"w{n}/{i}", digest(i))])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert meta.head(box) == 40
    seqs = [r[0] for r in meta.conn.execute("SELECT seq FROM commits WHERE box_id = ? ORDER BY seq", (box,))]
    assert seqs == list(range(1, 41))


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


def test_staged_commit_moves_every_row_and_drops_the_stage(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("gone", digest(0))])
    stage = meta.create_stage(box, alice)
    many = [put(f"f{i:05d}", digest(i), digest(i + 1)) for i in range(BATCH * 7)]  # rows past one statement
    with meta.write() as conn:
        assert meta.add_staged(conn, stage, many[:100], [0] * 100) == 100
        assert meta.add_staged(conn, stage, many, [0] * len(many)) == len(many)  # staged again: replaced
        meta.add_staged(conn, stage, [delete("gone")], [1])
        assert meta.staged_conflicts(conn, box, stage) == []
        seq, _, count = meta.append_staged_commit(conn, box, alice, None, "m", stage)
    assert (seq, count) == (2, len(many) + 1)
    assert [r["path"] for r in meta.tree(box, 2, "")] == [e["path"] for e in many]
    paths = meta.conn.execute("SELECT COUNT(*) FROM block_paths WHERE box_id = ?", (box,)).fetchone()[0]
    assert paths == 1 + 2 * len(many)
    for table in ("stages", "stage_changes"):
        assert meta.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_a_path_staged_again_grants_only_its_last_blocks(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    stage = meta.create_stage(box, alice)
    with meta.write() as conn:
        meta.add_staged(conn, stage, [put("x", digest(900))], [0])
        meta.add_staged(conn, stage, [put("x", digest(901), digest(902)), put("y", digest(903))], [0, 0])
        meta.add_staged(conn, stage, [put("y", digest(904))], [0])  # a retried part, newer content
        meta.append_staged_commit(conn, box, alice, None, "m", stage)

    def granted(path: str) -> list[bytes]:
        rows = meta.conn.execute("SELECT sha256 FROM block_paths WHERE box_id = ? AND path = ?", (box, path))
        return sorted(bytes(r[0]) for r in rows)

    assert granted("x") == sorted([digest(901), digest(902)])
    assert granted("y") == [digest(904)]


def test_staged_conflicts_follow_the_commit_rules(meta: SqliteMeta, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("kept", digest(1)), put("deleted", digest(1))])
    commit(meta, box, alice, [delete("deleted")])
    stage = meta.create_stage(box, alice)
    cases = {  # path -> (change, parent_rev, conflicts?)
        "kept": (put("kept", digest(2)), 1, False), "new": (put("new", digest(2)), 0, False),
        "deleted": (put("deleted", digest(2)), 0, False),  # re-creating a deleted path from nothing is fine
        "stale": (put("kept", digest(3)), 0, True),
    }
    with meta.write() as conn:
        for change, parent, _ in list(cases.values())[:3]:
            meta.add_staged(conn, stage, [change], [parent])
        assert meta.staged_conflicts(conn, box, stage) == []
        meta.add_staged(conn, stage, [put("kept", digest(3))], [0])  # based on nothing, but kept exists
        meta.add_staged(conn, stage, [delete("never")], [0])  # deleting what is not there
        conflicts = meta.staged_conflicts(conn, box, stage)
    assert [(c["path"], c["head_rev"], c["present"]) for c in conflicts] == [("kept", 1, True), ("never", 0, False)]


def test_a_stage_expires_after_a_day(meta: SqliteMeta, alice: int, monkeypatch: pytest.MonkeyPatch) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    old = meta.create_stage(box, alice)
    with meta.write() as conn:
        meta.add_staged(conn, old, [put("a", digest(1))], [0])
    later = time.time() + 25 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    fresh = meta.create_stage(box, alice)  # making a stage drops the expired ones
    with meta.read() as conn:
        assert meta.stage(conn, old) is None and meta.stage(conn, fresh) is not None
    assert meta.conn.execute("SELECT COUNT(*) FROM stage_changes").fetchone()[0] == 0
