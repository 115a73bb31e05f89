"""Numbered migrations of the PostgreSQL metadata database, its version kept in the one row of `box_schema`.

`migrations/NNNN_name.sql` are applied in order; a database at version N gets the files numbered above N,
and an empty database (no `box_schema` table) is at version 0. The whole upgrade is one transaction that
first takes an advisory lock of the database: two server processes starting at once queue there, and
the second reads the version the first one left, so each step is applied once. PostgreSQL's DDL is
transactional: a step that fails leaves the database as it was.
"""

from __future__ import annotations

from typing import Any

import psycopg

from server_min.meta.base import SchemaTooNew
from server_min.meta.migrations import numbered_migrations

# The key of the advisory lock an upgrade holds ("Box" in ASCII); advisory locks are per database.
LOCK_KEY = 0x426F78

SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS box_schema (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version INTEGER NOT NULL)"""


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every migration of this store, in order."""
    return numbered_migrations(__package__)


def latest() -> int:
    """The schema version this code writes."""
    return len(migrations())


def version(conn: psycopg.Connection[Any]) -> int:
    """The schema version of the database on `conn` (0 for an empty one)."""
    row = conn.execute("SELECT to_regclass('box_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT version FROM box_schema").fetchone()
    return int(row[0]) if row else 0


def too_new(current: int, latest: int) -> SchemaTooNew:
    """The refusal of a database at schema version `current`, above this code's `latest`."""
    return SchemaTooNew(f"the metadata database is at schema version {current}, newer than this "
                        f"server ({latest}): run the newer Box, or restore a backup")


def upgrade(url_or_conn: str | psycopg.Connection[Any]) -> list[str]:
    """Bring the database (a URL, or an autocommit connection) to the latest version in one transaction
    held under the advisory lock; the names of the files applied (none if it was up to date)."""
    if isinstance(url_or_conn, str):
        with psycopg.connect(url_or_conn, autocommit=True) as conn:
            return upgrade(conn)
    conn = url_or_conn
    steps = migrations()
    with conn.transaction():
        # Taken before the version is read: a process that waited here reads what the other one wrote.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        current = version(conn)
        if current > len(steps):
            raise too_new(current, len(steps))
        applied = []
        for number, name, sql in steps[current:]:
            conn.execute(sql)  # a script: without parameters, psycopg sends its statements at once
            applied.append(name)
            current = number
        if applied:
            conn.execute(SCHEMA_TABLE)
            conn.execute("INSERT INTO box_schema (version) VALUES (%s) "
                         "ON CONFLICT (one) DO UPDATE SET version = excluded.version", (current,))
    return applied


__all__ = ["LOCK_KEY", "latest", "migrations", "too_new", "upgrade", "version"]
