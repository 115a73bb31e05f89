"""PostgreSQL for tests: throwaway databases on the server at BOX_TEST_PG (default: 127.0.0.1:5432, user
postgres, trust auth). A server that cannot be reached FAILS the tests that need it, with the reason:
a CI run must never pass by skipping them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from server_min.meta.postgres import migrate

ADMIN_URL = os.environ.get("BOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_ADMIN_URL = ADMIN_URL


def admin() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's maintenance database, or the test fails saying why."""
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    # Outside the except block: the failure reads as one message, without the chained traceback.
    pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL} ({reason}): start it (user postgres, trust auth) "
                "or point BOX_TEST_PG at one", pytrace=False)


def url_of(name: str) -> str:
    """The URL of database `name` on the test server."""
    parts = urlsplit(ADMIN_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def create_database(icu_locale: str | None = None) -> str:
    """A new, empty, uniquely named database (`box_test_<random>`); its URL. With `icu_locale`, its default
    collation is that ICU locale's."""
    name = f"box_test_{secrets.token_hex(6)}"
    # template0: copying template1 fails while anyone else is connected to it.
    create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
    if icu_locale:
        create += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu_locale))
    with admin() as conn:
        conn.execute(create)
    return url_of(name)


def drop_database(url: str) -> None:
    """Drop the database at `url`, whoever is still connected."""
    name = urlsplit(url).path.lstrip("/")
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def database(upgrade: bool = True, icu_locale: str | None = None) -> Iterator[str]:
    """A new database (create_database), its schema made unless `upgrade` is off; its URL. Dropped at the end."""
    url = create_database(icu_locale)
    try:
        if upgrade:
            migrate.upgrade(url)
        yield url
    finally:
        drop_database(url)


def empty(url: str) -> None:
    """Delete every row of every table but the schema version, and restart the ids, in one script.

    DELETE, children before the tables they refer to, rather than TRUNCATE: on tables of a few rows it is
    an order of magnitude faster (TRUNCATE makes new files for every table, as a new database does)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_empty_script(url, conn))


_scripts: dict[str, sql.Composed] = {}


def _empty_script(url: str, conn: psycopg.Connection[Any]) -> sql.Composed:
    if url not in _scripts:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename != 'box_schema'")}
        refers: dict[str, set[str]] = {t: set() for t in tables}
        for child, parent in conn.execute(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'"):
            if child != parent:
                refers[child].add(parent)
        ordered: list[str] = []  # every table after all the tables that refer to it
        while refers:
            leaves = sorted(t for t in refers if not any(t in parents for parents in refers.values()))
            ordered += leaves
            for t in leaves:
                del refers[t]
        sequences = [r[0] for r in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")]
        _scripts[url] = sql.SQL("").join(
            [sql.SQL("DELETE FROM {};").format(sql.Identifier(t)) for t in ordered]
            + [sql.SQL("ALTER SEQUENCE {} RESTART;").format(sql.Identifier(q)) for q in sequences])
    return _scripts[url]


__all__ = ["ADMIN_URL", "admin", "database", "empty", "url_of"]
