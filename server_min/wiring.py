"""The one module that names concrete stores: builds them, and the service, from URLs.

  metadata  sqlite:///PATH (a file; sqlite:////abs/path as usual)  |  memory:
  blocks    file:///PATH (a folder of packs)  |  s3://BUCKET/PREFIX  |  memory:
            (s3: endpoint from StoreUrls.s3_endpoint, else boto3's AWS_ENDPOINT_URL; credentials and region
            as boto3 finds them; with cache_dir and cache_bytes, recently read blocks stay on local disk)
  notify    memory: (one process)

`--data DIR` means sqlite:///DIR/meta.db and file:///DIR/blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from server_min.blocks.base import BlockStore, StoreUnavailable
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
    s3_endpoint: str | None = None  # the S3-compatible store's URL for an s3:// blocks URL
    cache_dir: Path | None = None  # a local cache of recently read blocks (any blocks URL) ...
    cache_bytes: int = 0  # ... of at most this many bytes per server process; 0: no cache


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
    """The metadata store at `url` (its schema brought up to date unless `upgrade` is off)."""
    if url == "memory:":
        from server_min.meta.memory import MemoryMeta

        return MemoryMeta()
    if url.startswith("sqlite:"):
        from server_min.meta.sqlite import SqliteMeta

        path = _path(url, "sqlite")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SqliteMeta(path, upgrade=upgrade)
    raise BadStoreUrl(f"unknown metadata store {url!r}: use sqlite:///PATH or memory:")


def open_blocks(url: str, s3_endpoint: str | None = None) -> BlockStore:
    """The block store at `url`. It never drops anything: see BlockStore.drop_unfinished."""
    if url.startswith("s3:"):
        from server_min.blocks.s3 import S3Blocks

        try:
            return S3Blocks.from_url(url, endpoint=s3_endpoint)
        except (ValueError, StoreUnavailable) as exc:  # a missing bucket, refused credentials: one line
            raise BadStoreUrl(str(exc)) from None
    if url == "memory:":
        from server_min.blocks.memory import MemoryBlocks

        return MemoryBlocks()
    if url.startswith("file:"):
        from server_min.blocks.local import LocalBlocks

        return LocalBlocks(_path(url, "file"))
    raise BadStoreUrl(f"unknown block store {url!r}: use file:///PATH, s3://BUCKET/PREFIX or memory:")


def open_notifier(url: str) -> Notifier:
    """The notifier at `url`."""
    if url == "memory:":
        from server_min.notify.memory import MemoryNotifier

        return MemoryNotifier()
    raise BadStoreUrl(f"unknown notifier {url!r}: use memory:")


def build_service(urls: StoreUrls) -> Service:
    """A service over the stores at `urls`."""
    blocks = open_blocks(urls.blocks, urls.s3_endpoint)
    if urls.cache_dir is not None and urls.cache_bytes > 0:
        from server_min.blocks.cache import CachedBlocks

        blocks = CachedBlocks(blocks, urls.cache_dir, urls.cache_bytes)
    return Service(open_meta(urls.meta), blocks, open_notifier(urls.notify))


def service_for_data(data: Path) -> Service:
    """A service over a data folder (made 0700 if absent), as tests and admin commands open it."""
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return build_service(data_urls(data))


def memory_service() -> Service:
    """A service over in-memory stores (tests)."""
    return build_service(StoreUrls("memory:", "memory:", "memory:"))


__all__ = ["BadStoreUrl", "StoreUrls", "build_service", "data_urls", "memory_service", "open_blocks", "open_meta",
           "open_notifier", "service_for_data"]
