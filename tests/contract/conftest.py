"""Every implementation of each storage interface, as fixtures: a new store joins by adding itself here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server_min.blocks.base import BlockStore
from server_min.meta.base import MetaStore
from server_min.notify.base import Notifier


@pytest.fixture(params=["sqlite", "memory"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaStore]:
    if request.param == "sqlite":
        from server_min.meta.sqlite import SqliteMeta

        store: MetaStore = SqliteMeta(tmp_path / "meta.db")
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
