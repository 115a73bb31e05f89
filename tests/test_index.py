"""boxctl.local.index: the local SQLite index of a synced folder."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from boxctl.local.index import (
    MAX_VARIABLES,
    PENDING_REV,
    RACY_NS,
    REBUILDING,
    STATS_CACHE,
    Index,
    IndexDamaged,
    IndexEntry,
    is_damage,
    set_aside,
)

OLD = 1_600_000_000_000_000_000  # an mtime far in the past: never racy


def entry(path: str, rev: int = 1, mtime_ns: int = OLD, data: bytes = b"x", **kw: object) -> IndexEntry:
    digest = hashlib.sha256(data).digest()
    fields: dict[str, object] = dict(path=path, kind="file", size=len(data), mtime_ns=mtime_ns, inode=42,
                                     mode=0o644, rev=rev, content_hash=hashlib.sha256(digest).hexdigest(),
                                     blocks=digest)
    fields.update(kw)
    return IndexEntry(**fields)  # type: ignore[arg-type]


@pytest.fixture
def index(tmp_path: Path) -> Index:
    idx = Index(tmp_path / "index.db")
    yield idx
    idx.close()


def test_new_index_is_empty(index: Index) -> None:
    assert index.entries() == {}
    assert index.get("a") is None
    assert index.cursor == 0
    assert index.get_meta("nothing", "dflt") == "dflt"


def test_put_get_entries(index: Index) -> None:
    a, b = entry("a.txt"), entry("dir/b.txt", rev=3, data=b"bbb")
    link = entry("l", kind="link", size=0, blocks=b"", content_hash="h", target="a.txt")
    index.put([a, b, link])
    assert index.get("a.txt") == a
    assert index.get("l") == link and index.get("l").target == "a.txt"
    assert index.entries() == {"a.txt": a, "dir/b.txt": b, "l": link}


def test_put_replaces(index: Index) -> None:
    index.put([entry("a", rev=1)])
    index.put([entry("a", rev=2, data=b"new")])
    got = index.get("a")
    assert got is not None and got.rev == 2 and got.size == 3
    assert len(index.entries()) == 1


def test_block_ids(index: Index) -> None:
    d1, d2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
    index.put([entry("multi", blocks=d1 + d2)])
    got = index.get("multi")
    assert got is not None and got.block_ids == [d1.hex(), d2.hex()]
    assert entry("empty", blocks=b"").block_ids == []


def test_every_block_id_of_the_index(index: Index) -> None:
    d1, d2, d3 = (hashlib.sha256(bytes([n])).digest() for n in range(3))
    index.put([entry("multi", blocks=d1 + d2), entry("one", blocks=d3), entry("again", blocks=d1),
               entry("l", kind="link", size=0, blocks=b"", content_hash="h", target="one")])
    assert index.block_ids() == {d1, d2, d3}
    assert Index(index.cache_path.with_name("other.db")).block_ids() == set()


def test_racy_mtime_is_recorded_as_zero(index: Index) -> None:
    """A file modified within RACY_NS of the recording must be hashed again next time."""
    now = time.time_ns()
    index.put([entry("fresh", mtime_ns=now), entry("recent", mtime_ns=now - RACY_NS // 2),
               entry("old", mtime_ns=now - 10 * RACY_NS)])
    assert index.get("fresh").mtime_ns == 0
    assert index.get("recent").mtime_ns == 0
    assert index.get("old").mtime_ns == now - 10 * RACY_NS


def test_delete(index: Index) -> None:
    index.put([entry("a"), entry("b"), entry("c")])
    index.delete(["a", "c", "not-there"])
    assert list(index.entries()) == ["b"]


def test_meta_and_cursor(index: Index) -> None:
    index.set_meta("k", "v")
    assert index.get_meta("k") == "v"
    index.set_cursor(17)
    assert index.cursor == 17
    index.set_cursor(3)
    assert index.cursor == 3


def test_transaction_commits_together(index: Index) -> None:
    with index.transaction() as conn:
        index.put([entry("a"), entry("b")], conn)
        index.delete(["a"], conn)
        index.set_cursor(5, conn)
    assert list(index.entries()) == ["b"] and index.cursor == 5


def test_transaction_rolls_back_on_error(index: Index) -> None:
    index.put([entry("keep")])
    index.set_cursor(1)
    with pytest.raises(RuntimeError), index.transaction() as conn:
        index.put([entry("lost")], conn)
        index.delete(["keep"], conn)
        index.set_cursor(99, conn)
        raise RuntimeError("crash in the middle")
    assert list(index.entries()) == ["keep"]
    assert index.cursor == 1
    # and the index is usable afterwards
    with index.transaction() as conn:
        index.put([entry("after")], conn)
    assert sorted(index.entries()) == ["after", "keep"]


def test_entries_written_from_a_helper_thread_get_their_rev_when_committed(index: Index) -> None:
    """A push writes its entries in a helper thread while the server works, and names their revision after."""
    index.put([entry("old", rev=2)])
    generation = index.get_meta("generation", "0")

    def write() -> None:
        index.begin()
        index.put([entry("a", rev=PENDING_REV), entry("b", rev=PENDING_REV)])

    helper = threading.Thread(target=write)
    helper.start()
    helper.join()
    index.set_rev(["a", "b"], 7)
    index.commit()
    assert {p: e.rev for p, e in index.entries().items()} == {"a": 7, "b": 7, "old": 2}
    assert index.get_meta("generation", "0") != generation  # the stat cache sees the change


def test_a_big_push_names_every_pending_entry(index: Index) -> None:
    """More paths than one statement may bind: set_rev names them all, and nothing else."""
    index.put([entry("old/a", rev=3), entry("old/b", rev=4)])
    paths = [f"new/{i:06d}" for i in range(MAX_VARIABLES + 1)]
    index.begin()
    index.put([entry(p, rev=PENDING_REV) for p in paths])
    index.set_rev(paths, 9)
    index.commit()
    revs = {p: e.rev for p, e in index.entries().items()}
    assert revs.pop("old/a") == 3 and revs.pop("old/b") == 4
    assert set(revs.values()) == {9} and len(revs) == len(paths)


def test_an_open_transaction_rolled_back_leaves_the_index_as_it_was(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.db")
    index.put([entry("old", rev=2)])
    index.begin()
    index.put([entry("new", rev=0)])
    index.rollback()
    index.rollback()  # a second rollback (nothing open) is harmless
    assert list(index.entries()) == ["old"]
    index.begin()
    index.put([entry("left open", rev=0)])
    index.close()  # a process that dies before the server answers: nothing of it stays
    again = Index(tmp_path / "index.db")
    assert list(again.entries()) == ["old"]
    again.close()


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    first = Index(path)
    first.put([entry("a/b.txt", rev=9)])
    first.set_cursor(9)
    first.close()
    second = Index(path)
    try:
        assert second.get("a/b.txt") == entry("a/b.txt", rev=9)
        assert second.cursor == 9
    finally:
        second.close()


def test_unicode_paths(index: Index) -> None:
    names = ["caf\u00e9.txt", "日本/語.txt", "emoji-\U0001f600"]
    index.put([entry(n) for n in names])
    assert sorted(index.entries()) == sorted(names)
    assert index.get("cafe\u0301.txt") is None  # NFD is a different key: paths are stored canonical


def made(path: Path, count: int = 20) -> Path:
    """An index with `count` entries and a cursor, closed (its journal checkpointed into the file)."""
    index = Index(path)
    index.put([entry(f"dir/f{i}.txt", data=str(i).encode()) for i in range(count)])
    index.set_cursor(7)
    index.close()
    return path


def read_all(path: Path) -> None:
    index = Index(path)
    try:
        index.entries()
        index.stats()
        assert index.cursor == 7
    finally:
        index.close()


@pytest.mark.parametrize("how", ["garbage", "truncated", "emptied", "page overwritten"])
def test_a_damaged_index_is_one_error_naming_the_repair(tmp_path: Path, how: str) -> None:
    path = made(tmp_path / "index.db")
    read_all(path)  # sound before
    data = path.read_bytes()
    if how == "garbage":
        path.write_bytes(b"not a database " * 100)
    elif how == "truncated":
        path.write_bytes(data[:100])
    elif how == "emptied":
        path.write_bytes(b"")
    else:
        path.write_bytes(data[:4096] + b"\xa5" * 4096 + data[8192:])
    with pytest.raises(IndexDamaged) as caught:
        read_all(path)
    assert caught.value.exit_code == 9
    assert "damaged" in caught.value.message and "'boxctl check --repair'" in caught.value.message
    assert "\n" not in caught.value.message


def test_the_stats_snapshot_does_not_hide_a_damaged_table(tmp_path: Path) -> None:
    path = made(tmp_path / "index.db")
    read_all(path)  # writes the snapshot, at the same generation as the file
    assert (tmp_path / STATS_CACHE).exists()
    data = path.read_bytes()
    stamp = path.stat()
    path.write_bytes(data[:4096] + b"\xa5" * 4096 + data[8192:])  # the entries' page; the meta page is intact
    assert path.stat().st_mtime_ns != stamp.st_mtime_ns
    index = Index(path)
    try:
        assert index.cursor == 7
        with pytest.raises(IndexDamaged):
            index.stats()
    finally:
        index.close()


def test_a_busy_index_is_not_damage(tmp_path: Path) -> None:
    path = made(tmp_path / "index.db")
    holder = Index(path)
    holder.begin()
    other = sqlite3.connect(path, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("BEGIN IMMEDIATE")
        assert not is_damage(caught.value)
    finally:
        other.close()
        holder.rollback()
        holder.close()


def test_verify_finds_entries_at_odds_with_themselves(tmp_path: Path) -> None:
    path = made(tmp_path / "index.db", 3)
    index = Index(path)
    try:
        assert index.verify() == []
        index.put([entry("bad-hash.txt", content_hash="00" * 32),
                   entry("cut.txt", blocks=b"\x01" * 40),
                   entry("sizes.txt", sizes=b"\x00\x00\x00\x05"),
                   entry("../escape.txt"),
                   entry("odd-kind", kind="socket")])
        problems = index.verify()
    finally:
        index.close()
    assert len(problems) == 5, problems
    for name in ("bad-hash.txt", "cut.txt", "sizes.txt", "../escape.txt", "odd-kind"):
        assert any(p.startswith(repr(name)) for p in problems), (name, problems)


def test_set_aside_keeps_the_damaged_files_and_a_new_index_starts_empty(tmp_path: Path) -> None:
    path = made(tmp_path / "index.db")
    read_all(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"left by a crash")
    aside = set_aside(path)
    assert aside.name.startswith("index.db.damaged-") and aside.read_bytes()
    assert Path(f"{aside}-wal").read_bytes() == b"left by a crash"
    assert not path.exists() and not Path(f"{path}-wal").exists() and not (tmp_path / STATS_CACHE).exists()
    fresh = Index(path)
    try:
        assert fresh.entries() == {} and fresh.cursor == 0 and fresh.stats() == {}
    finally:
        fresh.close()
    assert set_aside(path) != aside  # a second one in the same second gets its own name


def test_a_rebuild_cut_short_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    index = Index(path)  # a new index is never refused, or check --repair could not fill one
    index.set_meta(REBUILDING, "1")
    index.close()
    with pytest.raises(IndexDamaged, match="cut short"):
        Index(path)


def test_an_index_cut_short_while_it_is_made_leaves_no_file_without_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone killed while it makes its index: the next command must find no index (and make one), never a
    file without tables, which it would take for a damaged index."""
    import boxctl.local.index_schema as schema

    path = tmp_path / "index.db"
    good = schema.MIGRATIONS
    monkeypatch.setattr(schema, "MIGRATIONS", ((*good[0], "CREATE TABLE cut short here"), *good[1:]))
    with pytest.raises(sqlite3.OperationalError):  # fails after the tables
        Index(path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(schema, "MIGRATIONS", good)
    index = Index(path)
    try:
        assert index.cursor == 0 and index.entries() == {}
    finally:
        index.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.db"]


FIXTURES = Path(__file__).parent / "fixtures"


def test_an_index_made_by_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    """tests/fixtures/index-v0.db was made by the first release (no schema version; make_index_v0.py):
    opened by this code it is upgraded to the current version and keeps every entry and its cursor."""
    import shutil

    from boxctl.local.index_schema import VERSION

    path = tmp_path / "index.db"
    shutil.copy(FIXTURES / "index-v0.db", path)
    with sqlite3.connect(path) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == 0
    index = Index(path)
    try:
        entries = index.entries()
        assert sorted(entries) == ["docs", "docs/hello.txt", "docs/link"]
        assert (entries["docs/hello.txt"].rev, entries["docs/hello.txt"].size) == (2, 6)
        assert entries["docs/link"].target == "hello.txt"
        assert index.cursor == 3 and index.verify() == []
    finally:
        index.close()
    with sqlite3.connect(path) as upgraded:
        assert upgraded.execute("PRAGMA user_version").fetchone()[0] == VERSION >= 1


def test_an_index_made_by_a_newer_boxctl_is_refused_untouched(tmp_path: Path) -> None:
    from boxctl.local.index_schema import VERSION, IndexTooNew

    path = tmp_path / "index.db"
    Index(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(IndexTooNew, match="newer boxctl"):
        Index(path)
    assert path.read_bytes() == before
