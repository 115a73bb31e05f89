"""Wake-ups across server processes through PostgreSQL LISTEN/NOTIFY (see notify.bus).

Each process holds one LISTEN connection, named by its application_name, in the listener thread;
publishes go out as `SELECT pg_notify(...)` on a small pool, so a commit's thread waits for one
round trip at most, never for the listener. The metadata database serves as the bus: nothing more to run.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from server_min.notify.bus import DEFAULT_CHANNEL, POLL, BusNotifier

SEND_TIMEOUT = 2.0  # seconds a publish may wait for a pooled connection before it gives up
_CHANNEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # a plain identifier: LISTEN takes no parameter
_names = itertools.count(1)
# The listening connection notices a peer that vanished without a word (a cut network) within ~25 s.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def where(url: str) -> str:
    """A PostgreSQL URL or conninfo for log lines: host, port and database, never a password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable URL)"
    return f"postgresql {info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class PostgresBus:
    """NOTIFY from a pool, LISTEN on one connection of its own."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL) -> None:
        if not _CHANNEL.fullmatch(channel):
            raise ValueError(f"channel {channel!r} must be a plain identifier (letters, digits, '_')")
        self.url = url
        self.channel = channel
        # The listener's application_name: how an operator (or a test) finds its backend.
        self.name = f"box-notify-{os.getpid()}-{next(_names)}"
        self.where = f"{where(url)} channel {channel}"
        self._pool = ConnectionPool(url, min_size=1, max_size=4, timeout=SEND_TIMEOUT, open=True,
                                    name=f"{self.name}-send",
                                    kwargs={"autocommit": True, "application_name": f"{self.name}-send"})

    def send(self, payload: str) -> None:
        for attempt in (1, 2):  # a pooled connection the server dropped fails once; the pool then replaces it
            try:
                with self._pool.connection() as conn:
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
                return
            except PoolTimeout:
                raise
            except psycopg.OperationalError:
                if attempt == 2:
                    raise

    def listen(self, deliver: Callable[[str], None], listening: Callable[[], None],
               stop: threading.Event) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name=self.name, connect_timeout=5,
                             **_KEEPALIVE) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            listening()
            while not stop.is_set():
                for note in conn.notifies(timeout=POLL):
                    deliver(note.payload)

    def close(self) -> None:
        self._pool.close()


class PostgresNotifier(BusNotifier):
    """The Notifier of several processes sharing a PostgreSQL database."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL, connect_timeout: float = 10.0) -> None:
        super().__init__(PostgresBus(url, channel), connect_timeout)


__all__ = ["PostgresBus", "PostgresNotifier"]
