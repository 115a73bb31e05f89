"""boxctl.index: the local SQLite index of a synced folder."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from boxctl.index import PENDING_REV, RACY_NS, SCAN_ABOVE, Index, IndexEntry

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


def test_a_big_push_names_its_pending_entries_in_one_pass(index: Index) -> None:
    """Past SCAN_ABOVE paths, set_rev updates the pending entries by their mark, not path by path."""
    index.put([entry("old/a", rev=3), entry("old/b", rev=4)])
    paths = [f"new/{i:06d}" for i in range(SCAN_ABOVE + 1)]
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
