"""The login attempt log in PostgreSQL, shared by every server process: the table login_attempts
(meta/postgres/migrations/0002_login_attempts.sql), one row per key.

An update inserts or locks its row in one statement (so two first failures of a key do not race) and
writes the new record in the same transaction; expired rows are deleted now and then.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from psycopg_pool import ConnectionPool

from server_min.limits.base import Attempts, digest

TIMEOUT = 5.0  # seconds a login waits for a pooled connection before it fails
PRUNE_EVERY = 1000  # updates in this process between deletions of expired rows


class PostgresAttempts:
    """Rows of login_attempts, keyed by the SHA-256 of the limiter's key."""

    def __init__(self, url: str) -> None:
        self._pool = ConnectionPool(url, min_size=1, max_size=4, timeout=TIMEOUT, open=True, name="box-attempts",
                                    kwargs={"autocommit": True, "application_name": "box-attempts"})
        self._updates = itertools.count(1)

    def get(self, key: str, now: float) -> Attempts | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT failures, locked_until, strikes, expires FROM login_attempts "
                               "WHERE key = %s AND expires > %s", (digest(key), now)).fetchone()
        return Attempts(tuple(row[0]), row[1], row[2], row[3]) if row else None

    def update(self, key: str, now: float, change: Callable[[Attempts | None], Attempts]) -> None:
        name = digest(key)
        with self._pool.connection() as conn:
            with conn.transaction():
                # One statement inserts the row or locks the one there, whatever runs at the same time.
                row = conn.execute("INSERT INTO login_attempts AS a (key) VALUES (%s) ON CONFLICT (key) "
                                   "DO UPDATE SET key = a.key RETURNING failures, locked_until, strikes, expires",
                                   (name,)).fetchone()
                assert row is not None
                record = change(Attempts(tuple(row[0]), row[1], row[2], row[3]) if row[3] > now else None)
                conn.execute("UPDATE login_attempts SET failures = %s::double precision[], locked_until = %s, "
                             "strikes = %s, expires = %s WHERE key = %s",
                             (list(record.failures), record.locked_until, record.strikes, record.expires, name))
            if next(self._updates) % PRUNE_EVERY == 0:
                conn.execute("DELETE FROM login_attempts WHERE expires <= %s", (now,))

    def forget(self, key: str) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM login_attempts WHERE key = %s", (digest(key),))

    def close(self) -> None:
        self._pool.close()


__all__ = ["PostgresAttempts"]
