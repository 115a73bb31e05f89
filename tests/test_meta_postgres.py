"""server_min.meta.postgres: what only the PostgreSQL store does (several server processes on one database,
per-box commit locks, migrations under an advisory lock, byte-order paths, faults); the MetaStore contract
itself is tests/contract/test_meta.py. Each PostgresMeta here stands for one server process."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import psycopg
import pytest

from server_min.meta.base import SchemaOutdated, SchemaTooNew
from server_min.meta.postgres import PostgresMeta, commit, migrate
from server_min.meta.records import NewEntry
from server_min.wiring import StoreUnavailable, open_meta
from tests import pg
from tests.conftest import wait_until

SIZES = (256 << 10, 1 << 20, 4 << 20)
TIMEOUT = 30.0  # for events that come at once unless something is wrong


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def put(path: str, *blocks: bytes) -> NewEntry:
    return NewEntry(path, "put", "file", 10, 1, 0o644, b"".join(blocks), None)


@pytest.fixture(scope="module")
def shared_db() -> Iterator[str]:
    with pg.database() as url:
        yield url


@pytest.fixture
def url(shared_db: str) -> str:
    pg.empty(shared_db)
    return shared_db


@pytest.fixture
def one(url: str) -> Iterator[PostgresMeta]:
    store = PostgresMeta(url, pool_size=4)
    yield store
    store.close()


@pytest.fixture
def two(url: str) -> Iterator[PostgresMeta]:
    """A second server process on the same database."""
    store = PostgresMeta(url, pool_size=4)
    yield store
    store.close()


def run(target: object, *args: object) -> tuple[threading.Thread, list[BaseException]]:
    """Start `target(*args)` in a thread; the list receives what it raised."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target(*args)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


# --- commits from several processes ---------------------------------------------------------------


def test_commits_to_one_box_from_two_processes_take_every_seq_once(one: PostgresMeta, two: PostgresMeta) -> None:
    alice = one.add_user("alice", "hash-a")
    box = one.create_box(alice, "docs", SIZES)
    threads, per_thread = 8, 10
    seqs: list[int] = []
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        meta = one if n % 2 else two
        start.wait(TIMEOUT)
        for i in range(per_thread):
            with meta.commit_tx(box) as tx:
                head = tx.head()
                done = tx.append(alice, None, f"{n}/{i}", [put(f"w{n}/{i}", digest(i))])
                assert done.seq == head + 1  # the head was read under the box's lock
                seqs.append(done.seq)

    started = [run(worker, n) for n in range(threads)]
    for thread, errors in started:
        thread.join(TIMEOUT * 4)
        assert not thread.is_alive() and errors == []
    total = threads * per_thread
    assert sorted(seqs) == list(range(1, total + 1))  # no gap, no duplicate
    assert one.head(box) == two.head(box) == total
    assert sorted(c.seq for c in two.commits(box, total + 1, None)) == list(range(1, total + 1))
    assert len(one.current_under(box, "")) == total


def test_a_commit_to_another_box_does_not_wait_for_an_open_one(one: PostgresMeta, two: PostgresMeta) -> None:
    """Box 1's commit transaction stays open (holding its lock) while the other process commits to box 2."""
    alice = one.add_user("alice", "hash-a")
    box1, box2 = one.create_box(alice, "one", SIZES), one.create_box(alice, "two", SIZES)
    holding, release, other_done = threading.Event(), threading.Event(), threading.Event()

    def hold_box1() -> None:
        with one.commit_tx(box1) as tx:
            tx.append(alice, None, "slow", [put("a", digest(1))])
            holding.set()
            assert release.wait(TIMEOUT)

    def commit_box2() -> None:
        with two.commit_tx(box2) as tx:
            tx.append(alice, None, "quick", [put("b", digest(2))])
        other_done.set()

    holder, holder_errors = run(hold_box1)
    try:
        assert holding.wait(TIMEOUT)
        quick, quick_errors = run(commit_box2)
        # Box 2's commit lands while box 1's transaction is still open: no lock is global.
        assert other_done.wait(TIMEOUT), "a commit to box 2 waited for box 1's transaction"
        assert not release.is_set() and two.head(box2) == 1 and two.head(box1) == 0
    finally:
        release.set()
        holder.join(TIMEOUT)
    quick.join(TIMEOUT)
    assert holder_errors == [] and quick_errors == []
    assert one.head(box1) == 1


def test_a_share_a_stage_or_a_link_of_a_box_does_not_wait_for_its_open_commit(one: PostgresMeta,
                                                                               two: PostgresMeta) -> None:
    """The commit's lock (FOR NO KEY UPDATE) lets rows that refer to the box go in meanwhile."""
    alice = one.add_user("alice", "hash-a")
    bob = one.add_user("bob", "hash-b")
    box = one.create_box(alice, "docs", SIZES)
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with one.commit_tx(box) as tx:
            tx.append(alice, None, "slow", [put("a", digest(1))])
            holding.set()
            assert release.wait(TIMEOUT)

    def refer() -> None:
        two.put_member(box, bob, "", "viewer")
        two.create_stage(box, bob)
        two.add_link("link-hash", box, "", alice, None)
        done.set()

    holder, holder_errors = run(hold)
    try:
        assert holding.wait(TIMEOUT)
        other, other_errors = run(refer)
        assert done.wait(TIMEOUT), "a share, stage or link waited for the box's commit"
    finally:
        release.set()
        holder.join(TIMEOUT)
    other.join(TIMEOUT)
    assert holder_errors == [] and other_errors == [] and one.head(box) == 1


def test_a_second_commit_to_the_same_box_waits_for_the_first(one: PostgresMeta, two: PostgresMeta, url: str) -> None:
    alice = one.add_user("alice", "hash-a")
    box = one.create_box(alice, "docs", SIZES)
    holding, release = threading.Event(), threading.Event()
    seqs: dict[str, int] = {}

    def first() -> None:
        with one.commit_tx(box) as tx:
            seqs["first"] = tx.append(alice, None, "first", [put("a", digest(1))]).seq
            holding.set()
            assert release.wait(TIMEOUT)

    def second() -> None:
        with two.commit_tx(box) as tx:
            seqs["second"] = tx.append(alice, None, "second", [put("a", digest(2))]).seq

    holder, holder_errors = run(first)
    assert holding.wait(TIMEOUT)
    waiter, waiter_errors = run(second)
    try:
        with psycopg.connect(url, autocommit=True) as watch:
            # The second process is queued on the box's row lock inside PostgreSQL.
            wait_until(lambda: watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone()[0] == 1, TIMEOUT, 0.01, "the second commit to queue")
        assert "second" not in seqs
    finally:
        release.set()
    holder.join(TIMEOUT)
    waiter.join(TIMEOUT)
    assert holder_errors == [] and waiter_errors == []
    assert seqs == {"first": 1, "second": 2}
    assert [e.blocks for e in one.tree(box, 2, "")] == [digest(2)]


def test_a_stage_made_through_one_process_is_committed_through_another(one: PostgresMeta, two: PostgresMeta,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "STAGE_PAGE", 7)  # the staged rows are read back over several pages
    alice = one.add_user("alice", "hash-a")
    bob = one.add_user("bob", "hash-b")
    box = one.create_box(alice, "docs", SIZES)
    two.put_member(box, bob, "", "viewer")
    stage = one.create_stage(box, alice)
    entries = [put(f"d/f{i:03d}", digest(i), digest(1000 + i)) for i in range(50)]
    with two.commit_tx(box) as tx:
        assert tx.stage(stage) is not None
        assert tx.add_staged(stage, entries[:30], [0] * 30) == 30
        tx.add_stage_folders(stage, {"d": True})
    with one.commit_tx(box) as tx:
        assert tx.add_staged(stage, entries[25:], [0] * 25) == 50
        assert tx.stage_folders(stage) == {"d": True} and tx.staged_conflicts(stage) == []
        assert [p for p, _, _ in tx.staged_under(stage, "d", 3)] == ["d/f000", "d/f001", "d/f002"]
    with two.commit_tx(box) as tx:
        done = tx.append_staged(stage, alice, None, "staged")
    assert (done.seq, done.changes) == (1, 50)
    assert [(e.path, e.blocks) for e in one.tree(box, 1, "")] == [(e.path, e.blocks) for e in entries]
    assert one.readable_blocks(bob, [digest(n) for n in (0, 49, 1000, 1049, 5000)]) == {
        digest(0), digest(49), digest(1000), digest(1049)}
    with one.commit_tx(box) as tx:
        assert tx.stage(stage) is None


def test_paths_compare_as_bytes_whatever_the_database_collation() -> None:
    """On a database whose default collation is linguistic (ICU en-US), paths still sort and range by code
    point, as SQLite does: 'B' before 'a', 'a-b' and 'a0' outside folder 'a'."""
    with pg.database(upgrade=True, icu_locale="en-US") as url:
        meta = PostgresMeta(url, pool_size=2)
        try:
            alice = meta.add_user("alice", "hash-a")
            box = meta.create_box(alice, "docs", SIZES)
            paths = ["a/x", "B", "a-b", "é", "z", "a0", "a/Y", "a"]
            with meta.commit_tx(box) as tx:
                tx.append(alice, None, "m", [put(p, digest(1)) for p in paths if p != "a"])
            assert [e.path for e in meta.tree(box, 1, "")] == sorted(p for p in paths if p != "a")
            assert [e.path for e in meta.current_under(box, "a")] == ["a/Y", "a/x"]
            assert [e.path for e in meta.tree(box, 1, "a")] == ["a/Y", "a/x"]
        finally:
            meta.close()


# --- migrations --------------------------------------------------------------------------------------


def test_an_empty_database_is_outdated_until_migrated() -> None:
    with pg.database(upgrade=False) as url:
        secret = url.replace("postgres@", "postgres:s3cret@")  # trust auth: any password is accepted
        with pytest.raises(SchemaOutdated) as caught:
            PostgresMeta(secret)
        message = str(caught.value)
        assert "\n" not in message and "s3cret" not in message
        assert f"box-server migrate --meta {url}" in message
        with psycopg.connect(url) as conn:
            assert migrate.version(conn) == 0
        with pytest.raises(StoreUnavailable, match="box-server migrate --meta"):  # the wiring says it in one line
            open_meta(url, upgrade=False)
        names = [name for _, name, _ in migrate.migrations()]
        assert migrate.upgrade(url) == names and names[0] == "0001_initial.sql"
        with psycopg.connect(url, autocommit=True) as conn:
            assert migrate.version(conn) == migrate.latest() == len(names)
            assert migrate.upgrade(conn) == []  # a second upgrade applies nothing
        PostgresMeta(url).close()


def test_two_processes_upgrading_at_once_apply_each_step_once() -> None:
    with pg.database(upgrade=False) as url:
        start = threading.Barrier(4)
        results: list[list[str]] = []

        def upgrade() -> None:
            start.wait(TIMEOUT)
            results.append(migrate.upgrade(url))

        started = [run(upgrade) for _ in range(4)]
        for thread, errors in started:
            thread.join(TIMEOUT)
            assert errors == []
        assert sorted(results, key=len) == [[], [], [], [name for _, name, _ in migrate.migrations()]]
        with psycopg.connect(url) as conn:
            assert migrate.version(conn) == migrate.latest()
            assert conn.execute("SELECT count(*) FROM box_schema").fetchone() == (1,)


def test_opening_with_upgrade_migrates_an_empty_database() -> None:
    with pg.database(upgrade=False) as url:
        meta = open_meta(url.replace("postgresql://", "postgres://"), upgrade=True)
        try:
            assert isinstance(meta, PostgresMeta) and meta.add_user("alice", "hash-a") == 1
        finally:
            meta.close()


def test_a_database_from_a_newer_box_is_refused_untouched(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE box_schema SET version = %s", (migrate.latest() + 1,))
        try:
            for upgrade in (False, True):
                with pytest.raises(SchemaTooNew, match="newer"):
                    PostgresMeta(url, upgrade=upgrade)
            assert migrate.version(conn) == migrate.latest() + 1
        finally:
            conn.execute("UPDATE box_schema SET version = %s", (migrate.latest(),))


# --- faults ------------------------------------------------------------------------------------------


def test_faults_name_a_full_disk_and_damage(one: PostgresMeta) -> None:
    assert one.fault(psycopg.errors.DiskFull("could not extend file")) == "full"
    assert one.fault(psycopg.errors.DataCorrupted("invalid page")) == "damaged"
    assert one.fault(psycopg.errors.IndexCorrupted("index is corrupt")) == "damaged"
    assert one.fault(psycopg.errors.UniqueViolation("duplicate")) is None
    assert one.fault(OSError(28, "No space left on device")) is None  # the database's disk, not ours
    assert all(issubclass(e, psycopg.Error) for e in one.errors)
