"""The scale-out metadata store: one PostgreSQL database shared by every server process.

Each process keeps a pool of connections; every write is one transaction. A box's commit transaction
(meta.base.CommitTx) holds the box's row lock (commit.py): commits to one box, from any process, take
turns, and commits to different boxes run in parallel. Nothing is kept in a process that another one
needs: stages, like everything else, live in tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from server_min.meta.base import Fault, SchemaOutdated
from server_min.meta.postgres import migrate
from server_min.meta.postgres.accounts import AccountsPg
from server_min.meta.postgres.blocks import BlocksPg
from server_min.meta.postgres.commit import PostgresCommitTx
from server_min.meta.postgres.conn import shown_url
from server_min.meta.postgres.folders import FoldersPg
from server_min.meta.postgres.journal import JournalPg

log = logging.getLogger("server_min")

DISK_FULL = frozenset({"53100"})  # disk_full
DAMAGED = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted

# Connections per process. A request holds one for a statement, a commit for its whole transaction (also
# while it waits for its box's lock); more worker threads than this queue for a connection, for up to the
# pool's timeout. Several processes multiply it: keep their sum under the server's max_connections.
POOL_SIZE = 10


class PostgresMeta(AccountsPg, BlocksPg, JournalPg, FoldersPg):
    """meta.base.MetaStore in one PostgreSQL database, over a pool of connections."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(self, url: str, upgrade: bool = False, pool_size: int = POOL_SIZE) -> None:
        """Open the database at `url` (postgresql://USER@HOST:PORT/DB). With `upgrade`, bring its schema up to
        date first; without, a schema older than the code raises SchemaOutdated. A schema newer than the code
        raises SchemaTooNew either way. Checked on one connection before the pool opens."""
        with psycopg.connect(url, autocommit=True) as conn:
            if upgrade:
                applied = migrate.upgrade(conn)
                if applied:
                    log.info("metadata database %s upgraded: %s", shown_url(url), ", ".join(applied))
            current, latest = migrate.version(conn), migrate.latest()
            if current < latest:
                raise SchemaOutdated(shown_url(url), current, latest)
            if current > latest:
                raise migrate.too_new(current, latest)
        super().__init__(url, pool_size)

    def fault(self, exc: BaseException) -> Fault | None:
        state = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
        if state in DISK_FULL:
            return "full"
        if state in DAMAGED:
            return "damaged"
        return None

    @contextmanager
    def commit_tx(self, box_id: int) -> Iterator[PostgresCommitTx]:
        with self.write() as conn:
            # The box's lock, held until this transaction ends (see commit.py): never a lock of all boxes.
            conn.execute("SELECT 1 FROM boxes WHERE id = %s FOR NO KEY UPDATE", (box_id,))
            yield PostgresCommitTx(conn, box_id)


__all__ = ["DAMAGED", "DISK_FULL", "POOL_SIZE", "PostgresMeta"]
