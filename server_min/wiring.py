"""The one module that names concrete stores: builds them, and the service, from URLs.

  metadata  sqlite:///PATH (a file; sqlite:////abs/path as usual)  |  memory:
            postgresql://USER@HOST:PORT/DB (or postgres://...; several server processes on one database)
  blocks    file:///PATH (a folder of packs)  |  s3://BUCKET/PREFIX  |  memory:
            (s3: endpoint from StoreUrls.s3_endpoint, else boto3's AWS_ENDPOINT_URL; credentials and region
            as boto3 finds them; with cache_dir and cache_bytes, recently read blocks stay on local disk)
  notify    memory: (one process)  |  postgresql (the metadata's database)  |  postgresql://...
            |  redis://HOST:PORT[/DB]; a bus URL may end in ?channel=NAME (default box_wake)
  logins    the wrong-password counts: in Redis when the notifier is, else in PostgreSQL when the
            metadata is, else in memory

`--data DIR` means sqlite:///DIR/meta.db and file:///DIR/blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from box_common.units import parse_size
from server_min.blocks.base import BlockStore
from server_min.blocks.base import StoreUnavailable as BlocksUnavailable
from server_min.limits.base import AttemptLog
from server_min.meta.base import MetaStore, SchemaOutdated, SchemaTooNew
from server_min.notify.base import Notifier
from server_min.service import Service


class BadStoreUrl(ValueError):
    """A store URL this server cannot open; the message is one line for the operator."""


class StoreUnavailable(RuntimeError):
    """A store that cannot be used now (its schema is outdated, its server unreachable): one line saying
    what to do."""


# The URL schemes each kind of store accepts, and how to write them (for messages).
META_SCHEMES = {"sqlite": "sqlite:///PATH", "postgresql": "postgresql://USER@HOST/DB", "postgres": "postgres://...",
                "memory": "memory:"}
BLOCK_SCHEMES = {"file": "file:///PATH", "s3": "s3://BUCKET/PREFIX", "memory": "memory:"}
NOTIFY_SCHEMES = {"memory": "memory", "postgresql": "postgresql", "redis": "redis://HOST:PORT"}


@dataclass(frozen=True)
class StoreUrls:
    """Where the server keeps its metadata and blocks, and how its processes wake each other."""

    meta: str
    blocks: str
    notify: str = "memory:"
    s3_endpoint: str | None = None  # the S3-compatible store's URL for an s3:// blocks URL
    cache_dir: Path | None = None  # a local cache of recently read blocks (any blocks URL) ...
    cache_bytes: int = 0  # ... of at most this many bytes per server process; 0: no cache
    folder: Path | None = None  # the data folder the URLs come from, if any


DEFAULT_CACHE = 1 << 30  # the block cache in front of an S3 store, per server process


def default_cache_dir() -> Path:
    """Where a server with no data folder keeps its block cache: the user's cache folder (each process
    takes its own slot inside it)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "box-server" / "blocks"


def store_urls(meta: str, blocks: str, notify: str | None = None, s3_endpoint: str | None = None,
               cache: str | None = None, folder: Path | None = None) -> StoreUrls:
    """The StoreUrls of a command line's options (BadStoreUrl for a malformed one)."""
    notify_url = {"": "memory:", "memory": "memory:"}.get(notify or "", notify or "memory:")
    for url, what, schemes in ((meta, "metadata store", META_SCHEMES), (blocks, "block store", BLOCK_SCHEMES),
                               (notify_url, "notifier", NOTIFY_SCHEMES)):
        if url and url not in schemes and urlsplit(url).scheme not in schemes:
            raise BadStoreUrl(f"unknown {what} {redact(url)!r}: use {' or '.join(schemes.values())}")
    try:
        cache_bytes = parse_size(cache) if cache is not None else DEFAULT_CACHE
    except ValueError as exc:
        raise BadStoreUrl(f"--block-cache: {exc}") from None
    cache_dir = (folder / "block-cache") if folder is not None else default_cache_dir()
    return StoreUrls(meta, blocks, notify_url, s3_endpoint, cache_dir if blocks.startswith("s3:") else None,
                     cache_bytes, folder)


def is_new_embedded(meta_url: str) -> bool:
    """True for a SQLite database that does not exist yet (its schema is made when it is first opened)."""
    return meta_url.startswith("sqlite:") and not _path(meta_url, "sqlite").exists()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def redact(url: str) -> str:
    """`url` without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


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
    """The metadata store at `url` (its schema brought up to date unless `upgrade` is off). A schema older
    or newer than the code, or a database that cannot be reached, is StoreUnavailable: one line that says
    what to do."""
    try:
        return _open_meta(url, upgrade)
    except (SchemaOutdated, SchemaTooNew) as exc:
        raise StoreUnavailable(str(exc)) from None
    except OSError as exc:
        raise StoreUnavailable(f"cannot open the metadata store {redact(url)}: {exc}") from None


def _open_meta(url: str, upgrade: bool) -> MetaStore:
    if url == "memory:":
        from server_min.meta.memory import MemoryMeta

        return MemoryMeta()
    if url.startswith("sqlite:"):
        from server_min.meta.sqlite import SqliteMeta

        path = _path(url, "sqlite")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SqliteMeta(path, upgrade=upgrade)
    if url.startswith(_POSTGRES):
        import psycopg

        from server_min.meta.postgres import PostgresMeta

        try:
            return PostgresMeta(url, upgrade=upgrade)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {_first_line(exc)}") from None
    raise BadStoreUrl(f"unknown metadata store {url!r}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB "
                      "or memory:")


def open_blocks(url: str, s3_endpoint: str | None = None) -> BlockStore:
    """The block store at `url`. It never drops anything: see BlockStore.drop_unfinished."""
    if url.startswith("s3:"):
        from server_min.blocks.s3 import S3Blocks

        try:
            return S3Blocks.from_url(url, endpoint=s3_endpoint)
        except (ValueError, BlocksUnavailable) as exc:  # a missing bucket, refused credentials: one line
            raise BadStoreUrl(str(exc)) from None
    if url == "memory:":
        from server_min.blocks.memory import MemoryBlocks

        return MemoryBlocks()
    if url.startswith("file:"):
        from server_min.blocks.local import LocalBlocks

        return LocalBlocks(_path(url, "file"))
    raise BadStoreUrl(f"unknown block store {url!r}: use file:///PATH, s3://BUCKET/PREFIX or memory:")


_POSTGRES = ("postgresql:", "postgres:")
_REDIS = ("redis:", "rediss:")


def _channel(url: str) -> tuple[str, str]:
    """`url` without its ?channel=NAME, and the channel (box_wake if none)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    channel = next((v for k, v in query if k == "channel"), "box_wake")
    rest = urlencode([(k, v) for k, v in query if k != "channel"])
    return urlunsplit(parts._replace(query=rest)), channel


def open_notifier(url: str, meta_url: str | None = None) -> Notifier:
    """The notifier at `url`; `postgresql` alone means the database of the metadata at `meta_url`.
    A bus that cannot be reached fails now (BadStoreUrl), not at the first commit."""
    if url == "memory:":
        from server_min.notify.memory import MemoryNotifier

        return MemoryNotifier()
    if url == "postgresql" or url.startswith(_POSTGRES):
        from server_min.notify.bus import BusUnavailable
        from server_min.notify.postgres import PostgresNotifier

        if url == "postgresql":
            if meta_url is None or not meta_url.startswith(_POSTGRES):
                raise BadStoreUrl("the notifier 'postgresql' uses the metadata's database, but the metadata is "
                                  "not on PostgreSQL: give a postgresql:// URL")
            url = meta_url
        try:
            return PostgresNotifier(*_channel(url))
        except (BusUnavailable, ValueError) as exc:
            raise BadStoreUrl(str(exc)) from None
    if url.startswith(_REDIS):
        from server_min.notify.bus import BusUnavailable
        from server_min.notify.redis import RedisNotifier

        try:
            return RedisNotifier(*_channel(url))
        except (BusUnavailable, ValueError) as exc:
            raise BadStoreUrl(str(exc)) from None
    raise BadStoreUrl(f"unknown notifier {url!r}: use memory:, postgresql, postgresql://... or redis://HOST:PORT")


def open_attempts(notify_url: str, meta_url: str) -> AttemptLog:
    """Where wrong passwords are counted: where every process sees them, as the notifier and metadata are."""
    if notify_url.startswith(_REDIS):
        from server_min.limits.redis import RedisAttempts

        return RedisAttempts(_channel(notify_url)[0])
    if meta_url.startswith(_POSTGRES):
        from server_min.limits.postgres import PostgresAttempts

        return PostgresAttempts(meta_url)
    from server_min.limits.memory import MemoryAttempts

    return MemoryAttempts()


def build_service(urls: StoreUrls, upgrade: bool = True) -> Service:
    """A service over the stores at `urls` (the metadata schema created or upgraded first unless not
    `upgrade`: then an outdated one is StoreUnavailable)."""
    meta = open_meta(urls.meta, upgrade)
    try:
        blocks = open_blocks(urls.blocks, urls.s3_endpoint)
        if urls.cache_dir is not None and urls.cache_bytes > 0:
            from server_min.blocks.cache import CachedBlocks

            blocks = CachedBlocks(blocks, urls.cache_dir, urls.cache_bytes)
        return Service(meta, blocks, open_notifier(urls.notify, meta_url=urls.meta),
                       open_attempts(urls.notify, urls.meta))
    except BaseException:  # a bus that cannot be reached, a bad URL: leave nothing open behind
        meta.close()
        raise


def migrate_meta(url: str) -> tuple[int, list[str], int]:
    """Create or upgrade the metadata schema at `url`: (version before, files applied, version now)."""
    if url.startswith("sqlite:"):
        from server_min.meta.sqlite import migrate
        from server_min.meta.sqlite.conn import Connections

        path = _path(url, "sqlite")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        conns = Connections(path)
        try:
            before = migrate.version(conns.conn)
            applied = migrate.upgrade(conns.conn)
            return before, applied, migrate.version(conns.conn)
        finally:
            conns.close()
    if url.startswith(_POSTGRES):
        import psycopg

        from server_min.meta.postgres import migrate as pg_migrate

        try:
            with psycopg.connect(url, autocommit=True) as conn:
                before = pg_migrate.version(conn)
            applied = pg_migrate.upgrade(url)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {redact(url)}: {_first_line(exc)}") from None
        except SchemaTooNew as exc:
            raise StoreUnavailable(str(exc)) from None
        return before, applied, pg_migrate.latest()
    raise BadStoreUrl(f"cannot migrate {redact(url)!r}: use sqlite:///PATH or postgresql://USER@HOST/DB")


def service_for_data(data: Path) -> Service:
    """A service over a data folder (made 0700 if absent), as tests and admin commands open it."""
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    return build_service(data_urls(data))


def memory_service() -> Service:
    """A service over in-memory stores (tests)."""
    return build_service(StoreUrls("memory:", "memory:", "memory:"))


__all__ = ["BadStoreUrl", "StoreUrls", "build_service", "data_urls", "memory_service", "open_attempts", "open_blocks",
           "open_meta", "open_notifier", "service_for_data"]
