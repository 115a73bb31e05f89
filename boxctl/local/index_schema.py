"""The index's schema as numbered migrations, its version kept in SQLite's `PRAGMA user_version`.

Migration N takes an index from version N-1 to N. An index made before versions were kept (the first
release) has version 0 and exactly the tables of migration 1, which creates them only if missing.
"""

from __future__ import annotations

import sqlite3

from boxctl.errors import BoxError

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: entries (what each path was at the last sync) and meta (cursor, generation, marks)
        """CREATE TABLE IF NOT EXISTS entries (
            path TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL, mode INTEGER NOT NULL, rev INTEGER NOT NULL, content_hash TEXT NOT NULL,
            blocks BLOB NOT NULL, target TEXT, sizes BLOB NOT NULL DEFAULT x'') WITHOUT ROWID""",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)
VERSION = len(MIGRATIONS)


class IndexTooNew(BoxError):
    """The index was made by a newer boxctl: this one would not know what its tables mean."""


def version_of(conn: sqlite3.Connection) -> int:
    """The schema version of the database behind `conn`."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: object) -> None:
    """Bring the index up to VERSION in one transaction; refuse one newer than this code, untouched."""
    if version_of(conn) == VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = version_of(conn)  # again, inside the lock: another command may have migrated meanwhile
        if found > VERSION:
            raise IndexTooNew(f"the index {path} was made by a newer boxctl (schema {found}, this one knows "
                              f"{VERSION}): upgrade boxctl to use this folder")
        for statements in MIGRATIONS[found:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
