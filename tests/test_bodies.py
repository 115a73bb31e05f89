"""server_min.bodies: upload bodies in reusable page-aligned buffers."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
from collections.abc import AsyncIterator

import pytest

from server_min.api.bodies import Body, BodyBuffers
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
