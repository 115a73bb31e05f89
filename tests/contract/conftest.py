"""Every implementation of each storage interface, as fixtures: a new store joins by adding itself here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server_min.blocks.base import BlockStore
from server_min.meta.base import MetaStore
from server_min.notify.base import Notifier


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


@pytest.fixture(params=["local", "memory"])
def blocks(request: pytest.FixtureRequest, tmp_path: Path) -> BlockStore:
    if request.param == "local":
        from server_min.blocks.local import LocalBlocks

        return LocalBlocks(tmp_path / "blocks")
    from server_min.blocks.memory import MemoryBlocks

    return MemoryBlocks()


@pytest.fixture(params=["memory"])
def notifier(request: pytest.FixtureRequest) -> Notifier:
    from server_min.notify.memory import MemoryNotifier

    return MemoryNotifier()
