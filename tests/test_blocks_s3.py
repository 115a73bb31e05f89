"""server_min.blocks.s3: packs as objects in a real S3 server (SeaweedFS, see tests/s3.py).

Faults are injected into the real exchange: botocore's `before-send` hook answers in the server's place
(5xx, as S3 does under load) and tests/faultproxy.py cuts or stalls connections.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError

from server_min.blocks.base import BlockUnreadable, Location, StoreUnavailable
from server_min.blocks.s3 import MiB, S3Blocks, _pieces
from server_min.wiring import BadStoreUrl, StoreUrls, build_service, open_blocks
from tests.conftest import free_port
from tests.faultproxy import FaultProxy
from tests.s3 import S3Server, s3_server  # noqa: F401  (the fixture)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:  # noqa: F811
    return s3_server.make_bucket("blocks-s3")


def new_store(s3: S3Server, bucket: str, endpoint: str | None = None, **options: Any) -> S3Blocks:
    """A store under a prefix of its own in `bucket`."""
    return S3Blocks(bucket, f"t-{uuid.uuid4().hex}", endpoint=endpoint or s3.endpoint, **options)


def calls(store: S3Blocks, operation: str) -> list[Any]:
    """The requests of `operation` (e.g. 'GetObject') `store` sends from now on, as botocore prepared them."""
    seen: list[Any] = []
    store.client.meta.events.register(f"before-send.s3.{operation}", lambda request, **_: seen.append(request))
    return seen


def fail_first(store: S3Blocks, operation: str, count: int, status: int = 500,
               code: str = "InternalError") -> list[int]:
    """Answer the first `count` requests of `operation` with an S3 error, in the server's place; the list
    counts every attempt botocore makes."""
    attempts: list[int] = []
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()

    class Raw:
        def stream(self, **_: Any) -> Iterator[bytes]:
            yield body

    def answer(request: Any, **_: Any) -> AWSResponse | None:
        attempts.append(1)
        if len(attempts) <= count:
            return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, Raw())
        return None

    store.client.meta.events.register(f"before-send.s3.{operation}", answer)
    return attempts


def uploads(s3: S3Server, bucket: str, prefix: str) -> list[dict[str, Any]]:
    return list(s3.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


def test_a_pack_is_one_object_under_the_prefix(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket)
    locations = store.put([b"first", b"second"])
    (pack,) = {loc.pack for loc in locations}
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=store.prefix)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(f"{store.prefix}packs/{pack[:2]}/{pack}", 11)]
    assert store.get(Location(pack, 3, 6)) == b"stseco"  # a pack is a plain concatenation


def test_reads_are_ranged(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket)
    data = os.urandom(1 * MiB)
    (loc,) = store.put([data])
    sent = calls(store, "GetObject")
    for offset, length in [(0, 1), (12345, 100), (MiB - 7, 7), (0, MiB)]:
        assert store.get(Location(loc.pack, offset, length)) == data[offset : offset + length]
    ranges = ["bytes=0-0", "bytes=12345-12444", f"bytes={MiB - 7}-{MiB - 1}", f"bytes=0-{MiB - 1}"]
    assert [r.headers["Range"] for r in sent] == [r.encode() for r in ranges]


def test_a_large_pack_goes_up_in_parts(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket, multipart_threshold=8 * MiB, part_size=5 * MiB)
    payloads = [os.urandom(4 * MiB), os.urandom(3 * MiB), os.urandom(4 * MiB) + b"end"]
    parts = calls(store, "UploadPart")
    single = calls(store, "PutObject")
    locations = store.put(payloads)
    assert len(parts) == 3 and single == []  # 5 + 5 + 1 MiB
    assert [store.get(loc) for loc in locations] == payloads  # the second straddles the first part boundary
    whole = b"".join(payloads)
    across = Location(locations[0].pack, 10 * MiB - 10, 20)  # the second boundary
    assert store.get(across) == whole[10 * MiB - 10 : 10 * MiB + 10]
    assert uploads(s3_server, bucket, store.prefix) == []
    assert store.put([b"small"]) and len(single) == 1  # under the threshold: one PUT


def test_a_failed_multipart_upload_is_aborted(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket, multipart_threshold=5 * MiB, part_size=5 * MiB, attempts=1)
    sent = calls(store, "UploadPart")

    def cut(**_: Any) -> None:
        if len(sent) == 2:
            raise EndpointConnectionError(endpoint_url=store.endpoint)

    store.client.meta.events.register("before-send.s3.UploadPart", cut)
    with pytest.raises(StoreUnavailable, match="upload of pack") as caught:
        store.put([os.urandom(12 * MiB)])
    assert "\n" not in str(caught.value)
    assert uploads(s3_server, bucket, store.prefix) == []  # its first part is not left in the bucket
    assert s3_server.client().list_objects_v2(Bucket=bucket, Prefix=store.prefix).get("Contents", []) == []


def test_pieces_cut_payloads_at_part_size() -> None:
    views = [memoryview(b"abc"), memoryview(b""), memoryview(b"defghij"), memoryview(b"k")]
    assert list(_pieces(views, 4)) == [b"abcd", b"efgh", b"ijk"]
    assert list(_pieces([memoryview(b"abcdefgh")], 4)) == [b"abcd", b"efgh"]


def test_gone_or_short_packs_are_unreadable(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket)
    (loc,) = store.put([b"0123456789"])
    with pytest.raises(BlockUnreadable, match=r"^pack 0{32} is missing$"):
        store.get(Location("0" * 32, 0, 5))
    with pytest.raises(BlockUnreadable, match="is missing"):
        store.get(Location("0" * 32, 0, 0))
    with pytest.raises(BlockUnreadable, match="shorter than the index says"):
        store.get(Location(loc.pack, 5, 10))  # the range runs past the end
    with pytest.raises(BlockUnreadable, match="shorter than the index says"):
        store.get(Location(loc.pack, 20, 5))  # the range starts past the end
    s3_server.client().delete_object(Bucket=bucket, Key=f"{store.prefix}packs/{loc.pack[:2]}/{loc.pack}")
    with pytest.raises(BlockUnreadable, match="missing"):
        store.get(loc)  # gone behind the store's back: as a deleted pack file of blocks.local


def test_transient_errors_are_retried(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket, attempts=4)
    put_attempts = fail_first(store, "PutObject", 2)
    (loc,) = store.put([b"kept"])
    assert len(put_attempts) == 3
    get_attempts = fail_first(store, "GetObject", 1, 503, "SlowDown")
    assert store.get(loc) == b"kept" and len(get_attempts) == 2


def test_errors_past_the_retries_are_unavailable_not_damage(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket, attempts=2)
    (loc,) = store.put([b"kept"])
    attempts = fail_first(store, "GetObject", 10, 503, "ServiceUnavailable")
    with pytest.raises(StoreUnavailable, match="read of pack") as caught:
        store.get(loc)  # an outage must not get a block marked damaged: not BlockUnreadable
    assert not isinstance(caught.value, BlockUnreadable) and "\n" not in str(caught.value)
    assert len(attempts) == 2
    fail_first(store, "PutObject", 10)
    with pytest.raises(StoreUnavailable, match="upload of pack"):
        store.put([b"lost"])


def test_dropped_and_stalled_connections_are_retried(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    with FaultProxy(port, mode="reset", after_bytes=256 << 10, direction="up", max_faults=2) as proxy:
        store = new_store(s3_server, bucket, endpoint=proxy.url)
        data = [os.urandom(1 * MiB) for _ in range(3)]
        proxy.arm()
        locations = [loc for d in data for loc in store.put([d])]  # the first two uploads are cut mid-body
        assert proxy.stats.resets == 2
        proxy.release()
        assert [store.get(loc) for loc in locations] == data
    with FaultProxy(port, mode="stall", after_bytes=1, direction="down", stall_seconds=3, max_faults=1) as proxy:
        store = new_store(s3_server, bucket, endpoint=proxy.url, read_timeout=1)
        (loc,) = store.put([b"kept"])
        proxy.arm()
        assert store.get(loc) == b"kept"  # the first answer stalls past the read timeout
        assert proxy.stats.stalls == 1


def test_drop_unfinished_aborts_only_old_uploads_under_its_prefix(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    later = [datetime.now(UTC)]
    store = new_store(s3_server, bucket, clock=lambda: later[0])
    client = s3_server.client()
    mine = client.create_multipart_upload(Bucket=bucket, Key=f"{store.prefix}packs/ab/abcd")["UploadId"]
    other = f"t-{uuid.uuid4().hex}/"
    client.create_multipart_upload(Bucket=bucket, Key=f"{other}packs/ab/abcd")
    store.drop_unfinished()  # a fresh upload may be another server process's, in flight
    assert [u["UploadId"] for u in uploads(s3_server, bucket, store.prefix)] == [mine]
    later[0] += timedelta(hours=23)
    store.drop_unfinished()
    assert len(uploads(s3_server, bucket, store.prefix)) == 1
    later[0] += timedelta(hours=2)  # now over a day old: a crash left it
    store.drop_unfinished()
    assert uploads(s3_server, bucket, store.prefix) == []
    assert len(uploads(s3_server, bucket, other)) == 1  # another prefix is not this store's


def test_concurrent_puts_and_gets_share_one_client(s3_server: S3Server, bucket: str) -> None:  # noqa: F811
    store = new_store(s3_server, bucket)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                data = [os.urandom(50_000), os.urandom(10)]
                locations = store.put(data)
                assert [store.get(loc) for loc in reversed(locations)] == data[::-1]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_bad_bucket_or_credentials_fail_at_once_in_one_line(
        s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: F811
    def refused(match: str, **options: Any) -> None:
        with pytest.raises(StoreUnavailable, match=match) as caught:
            S3Blocks(**{"bucket": bucket, "endpoint": s3_server.endpoint, **options})
        assert "\n" not in caught.value.reason and "Traceback" not in caught.value.reason

    refused(r"^bucket 'no-such-bucket' at http://127\.0\.0\.1:\d+ does not exist$", bucket="no-such-bucket")
    refused("connect|reach", endpoint=f"http://127.0.0.1:{free_port()}", attempts=1)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    refused("refused these credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    refused("refused these credentials")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no probe of an instance metadata service
    refused("no S3 credentials")


def test_wiring_opens_s3_urls(s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                              tmp_path: Path) -> None:
    store = open_blocks(f"s3://{bucket}/some/prefix/", s3_server.endpoint)
    assert isinstance(store, S3Blocks) and store.prefix == "some/prefix/"
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # boto3's own setting, when none is given
    assert open_blocks(f"s3://{bucket}/some/prefix").get(store.put([b"x"])[0]) == b"x"
    for url, match in [("s3://", "not an s3://BUCKET/PREFIX URL"), (f"s3://{bucket}?x=1", "not an s3://"),
                       ("s3://no-such-bucket/p", "does not exist")]:
        with pytest.raises(BadStoreUrl, match=match):
            open_blocks(url, s3_server.endpoint)
    urls = StoreUrls("memory:", f"s3://{bucket}/cached", s3_endpoint=s3_server.endpoint, cache_dir=tmp_path / "cache",
                     cache_bytes=1 * MiB)
    service = build_service(urls)
    from server_min.blocks.cache import CachedBlocks

    assert isinstance(service.store, CachedBlocks) and isinstance(service.store.store, S3Blocks)
    (loc,) = service.store.put([b"through the cache"])
    assert service.store.get(loc) == service.store.get(loc) == b"through the cache"
    assert service.store.hits == 1
    assert not isinstance(build_service(StoreUrls("memory:", "memory:", cache_dir=tmp_path / "c2")).store,
                          CachedBlocks)  # cache_bytes 0: no cache
