"""server_min.bodies: upload bodies in reusable page-aligned buffers."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
from collections.abc import AsyncIterator

import pytest

from server_min.api.bodies import BODY_HIGH_WATER, Body, BodyBuffers, raise_flow_limit
from server_min.errors import TooLarge


class FakeRequest:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def stream(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def read(body: Body, parts: list[bytes], limit: int) -> bytes:
    return bytes(asyncio.run(body.read(FakeRequest(parts), limit)))  # type: ignore[arg-type]


def test_a_body_is_read_whole_into_a_page_aligned_buffer() -> None:
    pool = BodyBuffers(1 << 20)
    with pool.lease() as body:
        assert read(body, [b"abc", b"", b"d" * 10_000], 1 << 20) == b"abc" + b"d" * 10_000
        assert body.size == 10_003
        anchor = ctypes.c_char.from_buffer(body.buffer)
        assert ctypes.addressof(anchor) % mmap.PAGESIZE == 0
        del anchor


def test_the_limit_holds_without_a_content_length() -> None:
    pool = BodyBuffers(1 << 20)
    with pool.lease() as body, pytest.raises(TooLarge):
        read(body, [b"x" * 600, b"x" * 600], 1000)


def test_buffers_are_reused_and_at_most_keep_are_kept() -> None:
    pool = BodyBuffers(1 << 20, keep=2)
    with pool.lease() as a, pool.lease() as b, pool.lease() as c:
        buffers = [a.buffer, b.buffer, c.buffer]
        read(a, [b"1"], 10)
    assert len({id(b) for b in buffers}) == 3
    assert [b.closed for b in buffers] == [True, False, False]  # given back last, when two were kept already
    with pool.lease() as again:
        assert again.buffer in buffers[1:]


def test_pages_past_keep_bytes_are_given_back() -> None:
    pool = BodyBuffers(4 << 20, keep_bytes=1 << 20)
    with pool.lease() as body:
        read(body, [b"\xff" * (3 << 20)], 4 << 20)
        buffer = body.buffer
    assert buffer[(1 << 20) - 1] == 0xFF
    if hasattr(mmap, "MADV_DONTNEED"):
        assert buffer[(2 << 20)] == 0  # dropped: an anonymous page reads back as zeros




def test_uvicorn_keeps_a_mebibyte_of_body_before_pausing_the_socket(monkeypatch) -> None:
    from uvicorn.protocols.http import h11_impl, httptools_impl

    monkeypatch.setattr(httptools_impl, "HIGH_WATER_LIMIT", 65536)
    monkeypatch.setattr(h11_impl, "HIGH_WATER_LIMIT", 65536)
    assert raise_flow_limit()
    assert httptools_impl.HIGH_WATER_LIMIT == h11_impl.HIGH_WATER_LIMIT == BODY_HIGH_WATER == 1 << 20
    assert raise_flow_limit(1024)  # never lowered
    assert httptools_impl.HIGH_WATER_LIMIT == 1 << 20


class RecordingTransport(asyncio.Transport):
    """What uvicorn's protocol sees of a socket: here it only counts the pauses."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses = 0

    def pause_reading(self) -> None:
        self.pauses += 1

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def pauses_for_one_read(piece: int) -> int:
    """Feed uvicorn's HTTP protocol one socket read of an upload (headers and `piece` body bytes)."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    async def app(scope, receive, send) -> None:  # never reads: the body waits in the protocol
        await asyncio.sleep(3600)

    async def feed() -> int:
        transport = RecordingTransport()
        protocol = HttpToolsProtocol(Config(app=app, lifespan="off", log_level="error"), ServerState(), {})
        protocol.connection_made(transport)
        protocol.data_received(b"POST /v1/blocks/pack HTTP/1.1\r\nHost: box\r\nContent-Length: 33554432\r\n\r\n"
                               + bytes(piece))
        for task in list(protocol.tasks):
            task.cancel()
        return transport.pauses

    return asyncio.run(feed())


def test_a_socket_read_of_an_upload_no_longer_pauses_reading(monkeypatch) -> None:
    from uvicorn.protocols.http import httptools_impl

    monkeypatch.setattr(httptools_impl, "HIGH_WATER_LIMIT", 65536)
    assert pauses_for_one_read(256 << 10) == 1  # uvicorn's own limit: every 256 KiB read pauses the socket
    raise_flow_limit()
    assert pauses_for_one_read(256 << 10) == 0
    assert pauses_for_one_read(2 << 20) == 1  # an app that falls behind still stops the reading
