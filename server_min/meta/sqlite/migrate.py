"""Numbered migrations of the SQLite metadata database, its version kept in `PRAGMA user_version`.

`migrations/NNNN_name.sql` are applied in order, each in its own transaction with the version it
brings; a database at version N gets the files numbered above N. A database made before numbered
migrations (version 0, tables present) is adopted by 0001, whose every statement is IF NOT EXISTS.
"""

from __future__ import annotations

import sqlite3

from server_min.meta.base import SchemaTooNew
from server_min.meta.migrations import numbered_migrations


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every migration of this store, in order."""
    return numbered_migrations(__package__)


def latest() -> int:
    """The schema version this code writes."""
    return len(migrations())


def version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def upgrade(conn: sqlite3.Connection) -> list[str]:
    """Bring the database on `conn` (autocommit mode) to the latest version, in one transaction taken
    before the version is read (two processes opening a new database apply each step once); the names
    of the files applied."""
    steps = migrations()
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = version(conn)
        if current > len(steps):
            raise too_new(current, len(steps))
        applied = []
        for number, name, sql in steps[current:]:
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            applied.append(name)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied


def too_new(current: int, latest: int) -> SchemaTooNew:
    """The refusal of a database at schema version `current`, above this code's `latest`."""
    return SchemaTooNew(f"the metadata database is at schema version {current}, newer than this "
                        f"server ({latest}): run the newer Box, or restore a backup")


def statements(sql: str) -> list[str]:
    """The statements of a script, one by one (executescript would commit the transaction)."""
    found, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    return found


__all__ = ["SchemaTooNew", "latest", "migrations", "too_new", "upgrade", "version"]
