"""PostgreSQL and Redis for the tests of the wake-up buses and the shared rate limit.

The servers are at BOX_TEST_PG (default postgresql://postgres@127.0.0.1:5432/postgres, trust auth) and
BOX_TEST_REDIS (default redis://127.0.0.1:6379/0). A test that cannot reach one fails, saying which and
how to point it elsewhere: a skipped test would hide a bus that was never tested. Every test works in
names of its own (channels, a schema, key prefixes), so runs side by side never see each other.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from server_min.limits.base import AttemptLog

PG_URL = os.environ.get("BOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BOX_TEST_REDIS", "redis://127.0.0.1:6379/0")
ATTEMPTS_SQL = Path(__file__).parent.parent / "server_min/meta/postgres/migrations/0002_login_attempts.sql"


def unique(prefix: str) -> str:
    """A name no other test run uses at the same time."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


def pg_connect() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at BOX_TEST_PG={PG_URL} ({exc}); start it or set BOX_TEST_PG",
                    pytrace=False)


def redis_connect() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at BOX_TEST_REDIS={REDIS_URL} ({exc}); start it or set BOX_TEST_REDIS",
                    pytrace=False)
    return client


@contextmanager
def pg_schema() -> Iterator[str]:
    """A URL whose connections work in a fresh schema holding the login_attempts table, dropped after."""
    schema = unique("box_test")
    with pg_connect() as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(ATTEMPTS_SQL.read_text())  # the migration, until meta/postgres/migrate.py runs it
            yield url
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def pg_kill(application_name: str) -> int:
    """Terminate the backends of `application_name` (as an operator or a failover would); how many."""
    with pg_connect() as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (application_name,)).fetchall()
    return len(rows)


def redis_kill(client_name: str) -> int:
    """Close the connections of `client_name` from the server's side; how many."""
    client = redis_connect()
    try:
        ids = [c["id"] for c in client.client_list() if c.get("name") == client_name]
        for client_id in ids:
            client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        client.close()


@contextmanager
def attempt_logs(kind: str) -> Iterator[Callable[[], AttemptLog]]:
    """Makes login attempt logs of `kind` (memory, redis, postgres) over one store, as the processes of one
    deployment hold them; each call stands for another process (memory: the same log, one process)."""
    made: list[AttemptLog] = []
    if kind == "memory":
        from server_min.limits.memory import MemoryAttempts

        one = MemoryAttempts()
        yield lambda: one
        return
    if kind == "redis":
        from server_min.limits.redis import RedisAttempts

        admin = redis_connect()
        prefix = unique("box_attempts") + ":"

        def make() -> AttemptLog:
            made.append(RedisAttempts(REDIS_URL, prefix))
            return made[-1]

        try:
            yield make
        finally:
            for log in made:
                log.close()
            for name in admin.scan_iter(match=f"{prefix}*"):
                admin.delete(name)
            admin.close()
        return
    from server_min.limits.postgres import PostgresAttempts

    with pg_schema() as url:

        def make_pg() -> AttemptLog:
            made.append(PostgresAttempts(url))
            return made[-1]

        try:
            yield make_pg
        finally:
            for log in made:
                log.close()
