"""Blocks in an S3-compatible bucket: one object per pack, read back with ranged GETs.

Each `put` becomes one object, `PREFIX/packs/<2 hex>/<32 hex>`, holding its payloads end to end as a pack
file of blocks.local does. A Location names its pack by the id alone (the key follows from the prefix), so a
bucket copied under another prefix still reads. Packs over `multipart_threshold` go up in parts; an upload
that fails is aborted at once, and `drop_unfinished` aborts the ones a crash left (only those over a day
old: the other server processes on the bucket have theirs in flight).

Transient faults (5xx, throttling, dropped connections, timeouts) are retried by botocore's standard retry
mode. What fails past the retries is StoreUnavailable, never BlockUnreadable: an outage must not get blocks
marked damaged. Only a pack that is gone (NoSuchKey) or shorter than its locations is unreadable.

One boto3 client serves every thread (clients are thread-safe, sessions are not), its connection pool sized
for the server's worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from server_min.blocks.base import BlockUnreadable, Location, StoreUnavailable

log = logging.getLogger("server_min")

MiB = 1 << 20
MULTIPART_THRESHOLD = 64 * MiB  # one PUT up to here: fewer requests, and S3 caps a single PUT at 5 GiB
PART_SIZE = 16 * MiB
MIN_PART = 5 * MiB  # S3 refuses smaller parts (but the last)
STALE_UPLOAD = timedelta(days=1)  # an upload in flight on another server process is never that old
CONNECTIONS = 64  # anyio's 40 worker threads and the upload threads, with room
BODY_ATTEMPTS = 3  # botocore retries a request, not a body cut off while it is read

MISSING = ("NoSuchKey", "NotFound", "404")
REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "403")


def _now() -> datetime:
    return datetime.now(UTC)


class S3Blocks:
    """Pack objects under `s3://bucket/prefix/packs/`, through one shared boto3 client.

    `endpoint` is the store's URL (None: boto3's own AWS_ENDPOINT_URL, else AWS); credentials and region
    are found as boto3 finds them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, profiles).
    A bucket that does not exist, refused credentials or an endpoint out of reach are StoreUnavailable here,
    at construction, with one line for the operator.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 connections: int = CONNECTIONS, attempts: int = 5, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, multipart_threshold: int = MULTIPART_THRESHOLD,
                 part_size: int = PART_SIZE, clock: Callable[[], datetime] = _now) -> None:
        if part_size < MIN_PART or multipart_threshold < part_size:
            raise ValueError(f"parts must be at least {MIN_PART} bytes and the multipart threshold no smaller")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._clock = clock
        # `attempts` counts the first try too (botocore's "max_attempts" counts only the retries).
        config = Config(retries={"mode": "standard", "total_max_attempts": attempts}, connect_timeout=connect_timeout,
                        read_timeout=read_timeout, max_pool_connections=connections)
        try:
            # A session of our own: boto3's default one is shared module state, and sessions are not thread-safe.
            self.client: Any = boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=config)
        except (BotoCoreError, ValueError) as exc:
            raise StoreUnavailable(f"cannot open s3://{bucket}/{self.prefix}: {_line(exc)}") from None
        self.endpoint = str(self.client.meta.endpoint_url)
        self._check_bucket()

    @classmethod
    def from_url(cls, url: str, endpoint: str | None = None, **options: Any) -> S3Blocks:
        """The store at `s3://BUCKET/PREFIX` (the prefix optional); ValueError for another kind of URL."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"{url!r} is not an s3://BUCKET/PREFIX URL")
        return cls(parts.netloc, unquote(parts.path), endpoint=endpoint, **options)

    def _check_bucket(self) -> None:
        """Fail now, in one line, if the bucket is not there for these credentials: not at the first upload."""
        where = f"bucket {self.bucket!r} at {self.endpoint}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = _code(exc), _status(exc)
            if code in ("NoSuchBucket", "NotFound", "404"):
                raise StoreUnavailable(f"{where} does not exist") from None
            if code in REFUSED:
                raise StoreUnavailable(f"{where} refused these credentials (check AWS_ACCESS_KEY_ID and "
                                       "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") from None
            if code in ("301", "PermanentRedirect", "400"):
                region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
                hint = f"it is in {region}: set AWS_DEFAULT_REGION" if region else "check AWS_DEFAULT_REGION"
                raise StoreUnavailable(f"{where} answered {status} ({hint})") from None
            raise StoreUnavailable(f"{where} answered {status} {code}") from None
        except NoCredentialsError:
            raise StoreUnavailable(f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE") from None
        except EndpointConnectionError:
            raise StoreUnavailable(f"cannot reach {self.endpoint} for bucket {self.bucket!r}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot open {where}: {_line(exc)}") from None

    def _key(self, pack: str) -> str:
        return f"{self.prefix}packs/{pack[:2]}/{pack}"

    def _unavailable(self, doing: str, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"S3 {doing} failed at {self.endpoint}: {_line(exc)}")

    def put(self, payloads: Sequence[bytes | memoryview]) -> list[Location]:
        """Store `payloads` end to end in one new pack object; durable once S3 has answered."""
        pack = secrets.token_hex(16)
        views = [memoryview(payload).cast("B") for payload in payloads]
        locations: list[Location] = []
        position = 0
        for view in views:
            locations.append(Location(pack, position, view.nbytes))
            position += view.nbytes
        key = self._key(pack)
        try:
            if position <= self.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"".join(views))
            else:
                self._put_parts(key, views)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(f"upload of pack {pack}", exc) from None
        return locations

    def _put_parts(self, key: str, views: list[memoryview]) -> None:
        """A multipart upload of `views`, one part in memory at a time; aborted if any step fails."""
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts = []
            for number, body in enumerate(_pieces(views, self.part_size), start=1):
                answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number,
                                                 Body=body)
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            # Parts of an upload never completed nor aborted stay in the bucket (and on the bill) for ever.
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def get(self, location: Location) -> bytes:
        """The payload at `location` (one ranged GET), BlockUnreadable if its pack is gone or too short, or
        StoreUnavailable if the store cannot answer now."""
        pack, key = location.pack, self._key(location.pack)
        if location.length == 0:  # no range names zero bytes: ask whether the pack is there
            self._head(pack, key)
            return b""
        first, last = location.offset, location.offset + location.length - 1
        for attempt in range(BODY_ATTEMPTS):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={first}-{last}")
            except ClientError as exc:
                if _code(exc) in MISSING:
                    raise BlockUnreadable(f"pack {pack} is missing") from None
                if _code(exc) == "InvalidRange" or _status(exc) == 416:  # the range starts past the end
                    raise BlockUnreadable(f"pack {pack} is shorter than the index says") from None
                raise self._unavailable(f"read of pack {pack}", exc) from None
            except BotoCoreError as exc:
                raise self._unavailable(f"read of pack {pack}", exc) from None
            try:
                data: bytes = answer["Body"].read()
                break
            except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError) as exc:
                if attempt + 1 == BODY_ATTEMPTS:
                    raise self._unavailable(f"read of pack {pack}", exc) from None
        if answer["ResponseMetadata"]["HTTPStatusCode"] == 200:  # a store that ignored the range: the whole pack
            data = data[first : last + 1]
        if len(data) != location.length:
            raise BlockUnreadable(f"pack {pack} is shorter than the index says")
        return data

    def _head(self, pack: str, key: str) -> None:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in MISSING:
                raise BlockUnreadable(f"pack {pack} is missing") from None
            raise self._unavailable(f"read of pack {pack}", exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(f"read of pack {pack}", exc) from None

    def forget(self, locations: Sequence[Location]) -> None:
        """Nothing to drop: every read is a GET (a local cache is blocks.cache, in front of this store)."""

    def discard(self, locations: Sequence[Location]) -> None:
        """Delete the pack objects of `locations`. Best effort: a pack left behind is harmless (nothing points
        to it), and the caller is usually handling another error that must not be hidden by this one."""
        for pack in sorted({loc.pack for loc in locations}):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(pack))
            except (BotoCoreError, ClientError) as exc:
                log.warning("pack %s was not deleted from s3://%s: %s", pack, self.bucket, _line(exc))

    def drop_unfinished(self) -> None:
        """Abort the multipart uploads under this prefix begun over a day ago: a crash left them. Newer ones
        may be another server process's uploads in flight on the same bucket, and are left alone."""
        cutoff = self._clock() - STALE_UPLOAD
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}packs/")
            stale = [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", ())
                     if u["Initiated"] < cutoff]
        except (BotoCoreError, ClientError) as exc:
            # Only tidying: a store that cannot list uploads now still serves (a lifecycle rule can do this).
            log.warning("unfinished uploads in s3://%s/%s were not listed: %s", self.bucket, self.prefix, _line(exc))
            return
        for key, upload in stale:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            except (BotoCoreError, ClientError) as exc:
                log.warning("unfinished upload of %s was not aborted: %s", key, _line(exc))


def _pieces(views: list[memoryview], size: int) -> Iterator[bytes]:
    """`views` end to end, cut in pieces of `size` bytes (the last shorter), each joined in one copy."""
    parts: list[memoryview] = []
    have = 0
    for view in views:
        while view.nbytes:
            take = min(size - have, view.nbytes)
            parts.append(view[:take])
            have += take
            view = view[take:]
            if have == size:
                yield b"".join(parts)
                parts, have = [], 0
    if parts:
        yield b"".join(parts)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _line(exc: BaseException) -> str:
    """An exception as one line (botocore's messages may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = ["S3Blocks"]
