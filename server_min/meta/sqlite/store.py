"""The default metadata store: one SQLite database in WAL mode, every write in one transaction.

SQLite has one writer at a time, so a box's commit transaction (meta.base.CommitTx) is simply a
write transaction: nothing else writes while it decides the conflicts and takes the next seq.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server_min.meta.base import Fault, SchemaOutdated
from server_min.meta.sqlite import migrate
from server_min.meta.sqlite.accounts import AccountsSql
from server_min.meta.sqlite.blocks import BlocksSql
from server_min.meta.sqlite.commit import SqliteCommitTx
from server_min.meta.sqlite.folders import FoldersSql
from server_min.meta.sqlite.journal import JournalSql

log = logging.getLogger("server_min")

SQLITE_FULL = 13
SQLITE_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_full(exc: BaseException) -> bool:
    """True if SQLite says the disk (or the user's quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and (
        getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc))


def is_corrupt(exc: BaseException) -> bool:
    """True if SQLite says the database file is damaged."""
    return isinstance(exc, sqlite3.DatabaseError) and (
        getattr(exc, "sqlite_errorcode", None) in SQLITE_CORRUPT or "malformed" in str(exc))


class SqliteMeta(AccountsSql, BlocksSql, JournalSql, FoldersSql):
    """meta.base.MetaStore in one SQLite file; one connection per thread."""

    errors: tuple[type[BaseException], ...] = (sqlite3.DatabaseError,)

    def __init__(self, path: Path, upgrade: bool = True) -> None:
        """Open (or create) the database at `path`, bringing its schema up to date; with `upgrade` off, a
        schema older than the code raises SchemaOutdated (and one newer SchemaTooNew) instead."""
        super().__init__(path)
        if not upgrade:
            self._check_schema()
            return
        try:
            applied = migrate.upgrade(self.conn)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            # A damaged database still serves what it can: each read that meets the damage answers
            # Damaged, and 'box-server admin check' says where it is.
            log.error("meta.db is damaged (%s): run 'box-server admin check --data %s'", exc, path.parent)
            return
        if applied:
            log.info("meta.db upgraded: %s", ", ".join(applied))

    def _check_schema(self) -> None:
        """SchemaOutdated or SchemaTooNew (the connection closed) unless the schema is the code's own."""
        try:
            current, latest = migrate.version(self.conn), migrate.latest()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            log.error("meta.db is damaged (%s): run 'box-server admin check --data %s'", exc, self.path.parent)
            return
        if current != latest:
            self.close()
            if current < latest:
                raise SchemaOutdated(f"sqlite:///{self.path.resolve()}", current, latest)
            raise migrate.too_new(current, latest)

    def fault(self, exc: BaseException) -> Fault | None:
        if is_full(exc):
            return "full"
        if is_corrupt(exc):
            return "damaged"
        return None

    @contextmanager
    def commit_tx(self, box_id: int) -> Iterator[SqliteCommitTx]:
        with self.write() as conn:
            yield SqliteCommitTx(conn, box_id)


__all__ = ["SqliteMeta", "is_corrupt", "is_full"]
