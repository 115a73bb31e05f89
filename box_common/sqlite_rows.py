"""Many-row INSERTs that release the GIL once per few thousand rows instead of once per row.

sqlite3's executemany releases the GIL around every row's step. While other threads run Python,
each row then waits to get the GIL back, up to a switch interval of the busy threads: a convoy (a
push writes its index beside its upload threads, and the server its journal beside other requests:
W5 first push). One multi-row VALUES statement binds thousands of rows in one call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

# SQLite allows 32,766 bound variables per statement since 3.32 (999 before).
MAX_VARIABLES = 30_000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def insert_rows(conn: sqlite3.Connection, head: str, rows: Iterable[Sequence[Any]], width: int,
                tail: str = "") -> None:
    """Run `{head} VALUES (?, ...), (?, ...) {tail}` over `rows`, each a sequence of `width` values."""
    rows = rows if isinstance(rows, list) else list(rows)
    per = MAX_VARIABLES // width
    group = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        conn.execute(f"{head} VALUES {','.join([group] * len(part))} {tail}", list(chain.from_iterable(part)))
