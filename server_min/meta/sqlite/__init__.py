"""The SQLite metadata store (the default): see store.py."""

from server_min.meta.sqlite.store import SqliteMeta

__all__ = ["SqliteMeta"]
