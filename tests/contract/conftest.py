"""Every implementation of each storage interface, as fixtures: a new store joins by adding itself here."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server_min.blocks.base import BlockStore
from server_min.limits.base import AttemptLog
from server_min.meta.base import MetaStore
from server_min.notify.base import Notifier
from tests import bus_servers
from tests.s3 import S3Server, s3_server  # noqa: F401  (a fixture: SeaweedFS, started once, for "s3" and "cached")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the session, emptied before each test that uses it (tests/pg.py)."""
    from tests import pg

    with pg.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaStore]:
    if request.param == "sqlite":
        from server_min.meta.sqlite import SqliteMeta

        store: MetaStore = SqliteMeta(tmp_path / "meta.db")
    elif request.param == "postgres":
        from server_min.meta.postgres import PostgresMeta
        from tests import pg

        url = request.getfixturevalue("pg_database")
        pg.empty(url)  # emptied, not made anew: far faster than a database per test
        store = PostgresMeta(url, pool_size=4)
    else:
        from server_min.meta.memory import MemoryMeta

        store = MemoryMeta()
    yield store
    store.close()


@pytest.fixture(params=["local", "memory", "s3", "cached"])
def blocks(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockStore]:
    if request.param == "local":
        from server_min.blocks.local import LocalBlocks

        yield LocalBlocks(tmp_path / "blocks")
        return
    if request.param == "memory":
        from server_min.blocks.memory import MemoryBlocks

        yield MemoryBlocks()
        return
    from server_min.blocks.s3 import S3Blocks

    s3: S3Server = request.getfixturevalue("s3_server")  # started only when an S3 case runs
    # A prefix of its own per test, in one bucket: tests never see each other's packs.
    store = S3Blocks(s3.make_bucket("contract"), f"t-{uuid.uuid4().hex}", endpoint=s3.endpoint)
    if request.param == "s3":
        yield store
        return
    from server_min.blocks.cache import CachedBlocks

    cached = CachedBlocks(store, tmp_path / "cache", 1 << 20)  # over S3: a hit and a miss must read the same
    yield cached
    cached.close()


def open_notifier(kind: str, channel: str) -> Notifier:
    """A notifier of `kind` (memory, postgres, redis) on `channel`, as one server process would hold it."""
    if kind == "postgres":
        from server_min.notify.postgres import PostgresNotifier

        bus_servers.pg_connect().close()  # fail with a clear message when the server is not there
        return PostgresNotifier(bus_servers.PG_URL, channel)
    if kind == "redis":
        from server_min.notify.redis import RedisNotifier

        bus_servers.redis_connect().close()
        return RedisNotifier(bus_servers.REDIS_URL, channel)
    from server_min.notify.memory import MemoryNotifier

    return MemoryNotifier()


@pytest.fixture(params=["memory", "postgres", "redis"])
def notifier(request: pytest.FixtureRequest) -> Iterator[Notifier]:
    made = open_notifier(request.param, bus_servers.unique("box_wake"))
    yield made
    made.close()


@pytest.fixture(params=["memory", "redis", "postgres"])
def attempts(request: pytest.FixtureRequest) -> Iterator[Callable[[], AttemptLog]]:
    """Makes login attempt logs over one store; each call stands for another server process."""
    with bus_servers.attempt_logs(request.param) as make:
        yield make
