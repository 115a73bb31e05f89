"""PostgreSQL connections of the metadata store: one pool per process, every write one transaction.

Connections are in autocommit mode: a read of one statement costs one round trip (no BEGIN, no COMMIT),
and a write opens its transaction explicitly (`write()`).

Long lists (digests, paths) travel as one array parameter sent in binary (`%b`), and results come back
in binary: psycopg then copies bytes instead of writing and parsing hex, which is most of the cost of
the lists of a first push of many small files (the W5 first-push benchmark).

Isolation is PostgreSQL's default, READ COMMITTED: each statement sees what was committed before it
started, which is what a commit needs once it holds its box's row lock (see commit.py); the journal is
append-only, so reads of several statements need no snapshot of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool

from server_min.meta.records import Entry

# The journal's columns in the order of records.Entry ("j." where a query joins the journal).
ENTRY = "box_id, seq, path, op, kind, size, mtime_ns, mode, blocks, target, checksum"
J_ENTRY = ", ".join(f"j.{c}" for c in ENTRY.split(", "))

# Above any path: the top of the range holding every path of a box (paths compare as bytes, COLLATE "C").
TOP = "\U0010ffff"

_tuple = tuple.__new__


def entry_rows(_: Any) -> RowMaker[Entry]:
    """A row factory making journal entries straight from the row's tuple."""
    return lambda values: _tuple(Entry, values)


def range_under(prefix: str) -> tuple[str, str]:
    """The half-open string range holding every path strictly under folder `prefix` ('' for all)."""
    return (prefix + "/", prefix + "0") if prefix else ("", TOP)


def no_limit(limit: int) -> int | None:
    """A LIMIT parameter: SQLite's -1 (no limit) is PostgreSQL's NULL."""
    return None if limit < 0 else limit


def shown_url(url: str) -> str:
    """`url` without its password (in the user part or as a `password=` parameter), for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Connections:
    """A pool of autocommit connections to one database, shared by the threads of one process."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.pool = ConnectionPool(url, min_size=min(2, pool_size), max_size=pool_size,
                                   kwargs={"autocommit": True}, name="box-meta", open=True)

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction: COMMIT on success, ROLLBACK on any error."""
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for reads, each statement its own snapshot (see the module doc)."""
        with self.pool.connection() as conn:
            yield conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement, a transaction of its own (autocommit); how many rows it changed."""
        with self.pool.connection() as conn:
            return conn.execute(sql, params).rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query (or of an INSERT ... RETURNING), if any."""
        with self.pool.connection() as conn:
            return conn.execute(sql, params, binary=True).fetchone()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        with self.pool.connection() as conn:
            return conn.execute(sql, params, binary=True).fetchall()

    def entries(self, sql: str, params: Sequence[Any] = ()) -> list[Entry]:
        """The journal entries a query selects (its columns: ENTRY or J_ENTRY)."""
        with self.pool.connection() as conn:
            return entries(conn, sql, params)

    def close(self) -> None:
        """Close every connection of the pool."""
        self.pool.close()


def entries(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> list[Entry]:
    """The journal entries a query on `conn` selects (its columns: ENTRY or J_ENTRY)."""
    with conn.cursor(row_factory=entry_rows, binary=True) as cur:
        return cur.execute(sql, params).fetchall()


__all__ = ["ENTRY", "J_ENTRY", "TOP", "Connections", "entries", "entry_rows", "no_limit", "range_under",
           "shown_url"]
