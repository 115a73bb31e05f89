"""Numbered SQL migrations, shared by the metadata stores: `migrations/NNNN_name.sql` inside a store's package."""

from __future__ import annotations

import re
from importlib import resources

NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def numbered_migrations(package: str) -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every migration of `package`, in order; numbered 1, 2, 3... without gaps."""
    found = []
    for item in (resources.files(package) / "migrations").iterdir():
        match = NAME.match(item.name)
        if match:
            found.append((int(match.group(1)), item.name, item.read_text(encoding="utf-8")))
    found.sort()
    if [n for n, _, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..{len(found)}: {[name for _, name, _ in found]}")
    return found


__all__ = ["NAME", "numbered_migrations"]
