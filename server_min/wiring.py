"""The one module that names concrete stores: builds them, and the service, from URLs.

  metadata  sqlite:///PATH (a file; sqlite:////abs/path as usual)  |  memory:
            postgresql://USER@HOST:PORT/DB (or postgres://...; several server processes on one database)
  blocks    file:///PATH (a folder of packs)                        |  memory:
  notify    memory: (one process)

`--data DIR` means sqlite:///DIR/meta.db and file:///DIR/blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from server_min.blocks.base import BlockStore
from server_min.meta.base import MetaStore
from server_min.notify.base import Notifier
from server_min.service import Service


class BadStoreUrl(ValueError):
    """A store URL this server cannot open; the message is one line for the operator."""


@dataclass(frozen=True)
class StoreUrls:
    """Where the server keeps its metadata and blocks, and how its processes wake each other."""

    meta: str
    blocks: str
    notify: str = "memory:"


def data_urls(data: Path) -> StoreUrls:
    """The stores of a data folder: meta.db and blocks/ inside it."""
    data = data.resolve()
    return StoreUrls(f"sqlite:///{data / 'meta.db'}", f"file:///{data / 'blocks'}")


def _path(url: str, scheme: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme != scheme or parts.netloc not in ("", "localhost") or not parts.path:
        raise BadStoreUrl(f"{url!r} is not a {scheme}:///PATH URL")
    return Path(unquote(parts.path))


def open_meta(url: str, upgrade: bool = True) -> MetaStore:
    """The metadata store at `url` (its schema brought up to date unless `upgrade` is off: then a schema older
    than the code raises meta.base.SchemaOutdated)."""
    if url == "memory:":
        from server_min.meta.memory import MemoryMeta

        return MemoryMeta()
    if url.startswith("sqlite:"):
        from server_min.meta.sqlite import SqliteMeta

        path = _path(url, "sqlite")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SqliteMeta(path, upgrade=upgrade)
    if url.startswith(("postgresql:", "postgres:")):
        from server_min.meta.postgres import PostgresMeta

        return PostgresMeta(url, upgrade=upgrade)
    raise BadStoreUrl(f"unknown metadata store {url!r}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB "
                      "or memory:")


def open_blocks(url: str) -> BlockStore:
    """The block store at `url`. It never drops anything: see BlockStore.drop_unfinished."""
    if url == "memory:":
        from server_min.blocks.memory import MemoryBlocks

        return MemoryBlocks()
    if url.startswith("file:"):
        from server_min.blocks.local import LocalBlocks

        return LocalBlocks(_path(url, "file"))
    raise BadStoreUrl(f"unknown block store {url!r}: use file:///PATH or memory:")


def open_notifier(url: str) -> Notifier:
    """The notifier at `url`."""
    if url == "memory:":
        from server_min.notify.memory import MemoryNotifier

        return MemoryNotifier()
    raise BadStoreUrl(f"unknown notifier {url!r}: use memory:")


def build_service(urls: StoreUrls) -> Service:
    """A service over the stores at `urls`."""
    return Service(open_meta(urls.meta), open_blocks(urls.blocks), open_notifier(urls.notify))


def service_for_data(data: Path) -> Service:
    """A service over a data folder (made 0700 if absent), as tests and admin commands open it."""
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return build_service(data_urls(data))


def memory_service() -> Service:
    """A service over in-memory stores (tests)."""
    return build_service(StoreUrls("memory:", "memory:", "memory:"))


__all__ = ["BadStoreUrl", "StoreUrls", "build_service", "data_urls", "memory_service", "open_blocks", "open_meta",
           "open_notifier", "service_for_data"]
