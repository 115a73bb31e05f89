"""A marshal snapshot of the index's stat columns, kept beside the database.

A speed trick kept for the workload W5 no-op status (and no-op push): every path's stats load in one
unmarshal instead of a row per path from SQL. The snapshot is keyed by its caller (the index's
generation and the database file's own stat), and anything unreadable counts as no snapshot.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from pathlib import Path
from typing import Any

STATS_CACHE = "stats.cache"  # the snapshot's name, beside the database


def load(path: Path, key: Any) -> Any | None:
    """The stats saved at `path` under `key`, or None (no snapshot, another key, or damage)."""
    try:
        saved_key, stats = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return stats if saved_key == key else None


def save(path: Path, key: Any, stats: Any) -> None:
    """Replace the snapshot at `path` (best effort: a snapshot that cannot be written is only slower)."""
    temp = path.with_suffix(".tmp")
    with contextlib.suppress(OSError):
        temp.write_bytes(marshal.dumps((key, stats)))
        os.replace(temp, path)
