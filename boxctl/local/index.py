"""The local index (`.box/index.db`): what each path looked like at the last sync, and the cursor."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from box_common.content import content_hash
from box_common.paths import InvalidPath, normalize_path
from boxctl.errors import REPAIR_HINT, IndexDamaged
from boxctl.local import stats_snapshot
from boxctl.local.durable import rename_noreplace
from boxctl.local.index_schema import migrate
from boxctl.local.stats_snapshot import STATS_CACHE

# SQLite allows 32,766 bound variables per statement since 3.32 (999 before).
MAX_VARIABLES = 30_000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999



# A file whose mtime is this close to "now" when we record it could still change within the same
# timestamp tick without us noticing (git's "racily clean" problem): record it so it gets hashed again.
RACY_NS = 2_000_000_000

# The revision of entries a push writes before the server has named its commit (see Index.set_rev).
PENDING_REV = -1
OWN_COMMITS = "own_commits"  # in meta: see Index.own_commits

# SQLite's primary result codes for a file that is not (or no longer) a sound database.
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
REBUILDING = "rebuilding"  # meta key set while check --repair fills a new index: a cut-short rebuild is damage


def is_damage(exc: BaseException) -> bool:
    """True for the errors SQLite (or decoding a garbled row) raises on a damaged database file; not for a
    busy, read-only or full one."""
    if isinstance(exc, UnicodeDecodeError):
        return True
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return False


F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Turn the damage errors an Index method meets into IndexDamaged (one line on the CLI, exit 9)."""

    @functools.wraps(method)
    def run(self: Index, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if is_damage(exc):
                raise IndexDamaged(self.path, _reason(exc)) from None
            raise

    return run  # type: ignore[return-value]


def _reason(exc: BaseException) -> str:
    return "a row that is not valid text" if isinstance(exc, UnicodeDecodeError) else str(exc)


@dataclass(slots=True)
class IndexEntry:
    """A path as it was when this device last synced it."""

    path: str
    kind: str
    size: int
    mtime_ns: int
    inode: int
    mode: int
    rev: int
    content_hash: str
    blocks: bytes
    target: str | None = None
    sizes: bytes = b""  # each block's length, uint32 big-endian, when known

    @property
    def block_ids(self) -> list[str]:
        return [self.blocks[i : i + 32].hex() for i in range(0, len(self.blocks), 32)]

    def block_spans(self) -> list[tuple[bytes, int, int]]:
        """(digest, offset, length) of each block, if the sizes are known; [] otherwise."""
        count = len(self.blocks) // 32
        if len(self.sizes) != 4 * count:
            return []
        spans = []
        offset = 0
        for i in range(count):
            length = int.from_bytes(self.sizes[4 * i : 4 * i + 4], "big")
            spans.append((self.blocks[32 * i : 32 * i + 32], offset, length))
            offset += length
        return spans


def pack_sizes(sizes: list[int]) -> bytes:
    """Block lengths as stored in the index."""
    return struct.pack(f">{len(sizes)}I", *sizes)


def _create(path: Path) -> None:
    """Make a new index with its tables under a temp name, then rename it into place (never over one made
    meanwhile): a command killed while it makes the index (a clone cut short) leaves no file without
    tables, which every later command would take for a damaged index."""
    temp = path.with_name(f"{path.name}.new-{secrets.token_hex(6)}")
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            migrate(conn, path)
        finally:
            conn.close()  # the last connection: SQLite folds the WAL in and removes it
        with contextlib.suppress(FileExistsError):
            rename_noreplace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


class Index:
    """SQLite index of one synced folder; every update runs in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache_path = path.with_name(STATS_CACHE)
        existed = path.exists()
        if not existed:
            _create(path)
        # The connection may be used from another thread than the one that opened it, never by two at once.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if existed and not {"entries", "meta"} <= tables:
                # Every index is made with its tables: an existing file without them was emptied or cut short.
                raise IndexDamaged(path, "its tables are missing")
            migrate(self.conn, path)
            if existed and self.conn.execute("SELECT value FROM meta WHERE key = ?", (REBUILDING,)).fetchone():
                raise IndexDamaged(path, f"a rebuild by '{REPAIR_HINT}' was cut short")
        except (sqlite3.DatabaseError, UnicodeDecodeError, IndexDamaged) as exc:
            self.conn.close()
            if isinstance(exc, IndexDamaged) or not is_damage(exc):
                raise
            raise IndexDamaged(path, _reason(exc)) from None

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; it also moves the generation that the stat cache is checked against."""
        self.begin()
        try:
            yield self.conn
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @_guarded
    def begin(self) -> None:
        """Open a write transaction by hand (see `transaction`); end it with `commit` or `rollback`."""
        self.conn.execute("BEGIN IMMEDIATE")

    @_guarded
    def commit(self) -> None:
        """Commit the open transaction, moving the generation that the stat cache is checked against."""
        try:
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('generation', '1') ON CONFLICT (key) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
        except BaseException:
            self.rollback()
            raise
        self.conn.execute("COMMIT")

    @_guarded
    def rollback(self) -> None:
        """Drop the open transaction, if there is one."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @_guarded
    def entries(self) -> dict[str, IndexEntry]:
        """Every indexed path."""
        return {
            row[0]: IndexEntry(*row)
            for row in self.conn.execute(
                "SELECT path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes FROM entries"
            )
        }

    @_guarded
    def block_ids(self) -> set[bytes]:
        """Every block id the indexed files are made of (32-byte SHA-256 digests)."""
        ids: set[bytes] = set()
        for (blocks,) in self.conn.execute("SELECT blocks FROM entries WHERE length(blocks) > 0"):
            if len(blocks) == 32:
                ids.add(blocks)
            else:
                ids.update(blocks[i : i + 32] for i in range(0, len(blocks), 32))
        return ids

    @_guarded
    def stats(self) -> dict[str, tuple[str, int, int, int, int, str | None]]:
        """(kind, size, mtime_ns, inode, mode, target) of every path: all a scan needs, loaded fast.

        A snapshot beside the database (see stats_snapshot) serves it when its generation matches the
        index's; otherwise SQL, and a new snapshot.
        """
        # Also keyed on the database file's own stat: a file changed behind SQLite's back (overwritten,
        # restored from a copy) is read again, so that damage in it shows instead of hiding behind the snapshot.
        key = (self.get_meta("generation", "0"), self._file_stamp())
        saved = stats_snapshot.load(self.cache_path, key)
        if saved is not None:
            return saved
        # One shared string per kind, like a scan's: comparing two of them is then one pointer check.
        kinds = {"file": "file", "dir": "dir", "link": "link"}
        stats = {
            path: (kinds.get(kind, kind), size, mtime_ns, inode, mode, target)
            for path, kind, size, mtime_ns, inode, mode, target
            in self.conn.execute("SELECT path, kind, size, mtime_ns, inode, mode, target FROM entries")
        }
        stats_snapshot.save(self.cache_path, key, stats)
        return stats

    def _file_stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_size, st.st_mtime_ns, st.st_ino

    @_guarded
    def get_many(self, paths: list[str]) -> dict[str, IndexEntry]:
        """Full entries of `paths` (those that are indexed)."""
        found: dict[str, IndexEntry] = {}
        for start in range(0, len(paths), 500):
            part = paths[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                "SELECT path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes FROM entries "
                f"WHERE path IN ({marks})",
                part,
            ):
                found[row[0]] = IndexEntry(*row)
        return found

    @_guarded
    def get(self, path: str) -> IndexEntry | None:
        row = self.conn.execute(
            "SELECT path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes FROM entries "
            "WHERE path = ?",
            (path,),
        ).fetchone()
        return IndexEntry(*row) if row else None

    @_guarded
    def put(self, entries: Iterable[IndexEntry], conn: sqlite3.Connection | None = None) -> None:
        """Insert or replace entries (inside the caller's transaction if given)."""
        now = time.time_ns()
        rows = [
            (e.path, e.kind, e.size, 0 if now - e.mtime_ns < RACY_NS else e.mtime_ns, e.inode, e.mode, e.rev,
             e.content_hash, e.blocks, e.target, e.sizes)
            for e in entries
        ]
        (conn or self.conn).executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    @_guarded
    def set_rev(self, paths: list[str], rev: int, conn: sqlite3.Connection | None = None) -> None:
        """Give `paths` revision `rev`: a push writes its entries with PENDING_REV in an open transaction
        before the server names the commit; `paths` must be every entry written so."""
        self._for_paths("UPDATE entries SET rev = ? WHERE path IN", list(paths), conn, rev)

    @_guarded
    def delete(self, paths: Iterable[str], conn: sqlite3.Connection | None = None) -> None:
        self._for_paths("DELETE FROM entries WHERE path IN", list(paths), conn)

    def _for_paths(self, head: str, paths: list[str], conn: sqlite3.Connection | None, *params: Any) -> None:
        """Run `{head} (?, ...)` with `params` first, over `paths` in as few statements as SQLite allows."""
        per = MAX_VARIABLES - len(params)
        for start in range(0, len(paths), per):
            part = paths[start : start + per]
            (conn or self.conn).execute(f"{head} ({','.join('?' * len(part))})", (*params, *part))

    @_guarded
    def get_meta(self, key: str, default: str = "") -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @_guarded
    def set_meta(self, key: str, value: str, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.conn).execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @_guarded
    def delete_meta(self, key: str, conn: sqlite3.Connection | None = None) -> None:
        (conn or self.conn).execute("DELETE FROM meta WHERE key = ?", (key,))

    @_guarded
    def verify(self) -> list[str]:
        """Every problem of the index: SQLite's own check of each page, then each entry's (see entry_problem)
        and the cursor's; [] when it is sound."""
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check") if row[0] != "ok"][:20]
        if problems:
            return problems
        columns = "path, kind, size, mtime_ns, inode, mode, rev, content_hash, blocks, target, sizes"
        for row in self.conn.execute(f"SELECT {columns} FROM entries"):
            e = IndexEntry(*row)
            problem = entry_problem(e)
            if problem:
                problems.append(f"{e.path!r}: {problem}")
        self.cursor  # noqa: B018 -- raises IndexDamaged if it is not a number
        return problems

    @property
    def cursor(self) -> int:
        """The seq up to which this device has applied the box's journal."""
        value = self.get_meta("cursor", "0")
        try:
            return int(value)
        except ValueError:
            raise IndexDamaged(self.path, f"its cursor {value!r} is not a number") from None

    @_guarded
    def set_cursor(self, seq: int, conn: sqlite3.Connection | None = None) -> None:
        self.set_meta("cursor", str(seq), conn)
        own = self.own_commits()
        if own:  # those the cursor passed are applied: no longer told apart from other changes
            self._set_own({s: n for s, n in own.items() if s > seq}, conn)

    def own_commits(self) -> dict[int, int]:
        """The commits this folder made after its cursor (seq -> how many changes each holds): they landed
        while other commits were still to pull, so the cursor could not move past them. `status` leaves
        them out of the remote changes waiting; a pull moves the cursor past them."""
        try:
            return {int(s): int(n) for s, n in json.loads(self.get_meta(OWN_COMMITS, "{}")).items()}
        except (ValueError, TypeError, AttributeError):
            return {}  # a damaged note only makes status count these changes as waiting

    def add_own_commit(self, seq: int, changes: int, conn: sqlite3.Connection | None = None) -> None:
        """Note a commit this folder made that the cursor could not pass (see own_commits)."""
        self._set_own(self.own_commits() | {seq: changes}, conn)

    def _set_own(self, own: dict[int, int], conn: sqlite3.Connection | None) -> None:
        if own:
            self.set_meta(OWN_COMMITS, json.dumps({str(s): n for s, n in sorted(own.items())}), conn)
        else:
            self.delete_meta(OWN_COMMITS, conn)


def entry_problem(e: IndexEntry) -> str | None:
    """What is wrong with one entry read back from the index, or None: the checks that find damage SQLite
    cannot see (a byte changed inside a row leaves the page sound but the entry at odds with itself)."""
    if not isinstance(e.path, str) or not isinstance(e.kind, str) or e.kind not in ("file", "dir", "link"):
        return "not a file, folder or link"
    try:
        if normalize_path(e.path) != e.path:
            return "its path is not in canonical form"
    except InvalidPath:
        return "its path is not a valid box path"
    if not type(e.size) is type(e.mtime_ns) is type(e.inode) is type(e.mode) is type(e.rev) is int \
            or e.size < 0 or e.rev < 0:
        return "a size, time, mode or revision that is not a number"
    if type(e.content_hash) is not str or type(e.blocks) is not bytes or type(e.sizes) is not bytes:
        return "a content hash or block list of the wrong type"
    if e.kind == "file":
        count, rest = divmod(len(e.blocks), 32)
        if rest or (count == 0) != (e.size == 0):
            return "its block list is cut short"
        if e.content_hash != hashlib.sha256(e.blocks).hexdigest():  # content_hash("file", ...), without the call
            return "its content hash is not that of its blocks"
        if e.sizes and (len(e.sizes) != 4 * count or sum(struct.unpack(f">{count}I", e.sizes)) != e.size):
            return "its block sizes do not add up to its size"
    elif e.kind == "link" and (not isinstance(e.target, str) or e.content_hash != content_hash("link", b"", e.target)):
        return "its content hash is not that of its target"
    return None


def set_aside(path: Path) -> Path:
    """Move a damaged index (with its WAL and shared-memory files) to `index.db.damaged-STAMP`, and drop the
    stats snapshot: a new index then starts empty, never replaying the old one's journal."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    number = 1
    while aside.exists():
        number += 1
        aside = aside.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{number}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    with contextlib.suppress(FileNotFoundError):
        path.with_name(STATS_CACHE).unlink()
    return aside
