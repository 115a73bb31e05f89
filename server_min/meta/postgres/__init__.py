"""The PostgreSQL metadata store (several server processes on one database): see store.py."""

from server_min.meta.postgres.store import PostgresMeta

__all__ = ["PostgresMeta"]
