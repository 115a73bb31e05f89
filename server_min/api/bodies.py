"""Upload bodies read into reusable, page-aligned buffers.

Touching fresh memory is what an upload costs most: a page fault per 4 KiB, and a body joined
from its pieces is a new block of memory every time. A block upload is read instead into one of
a few buffers that live as long as the server, so their pages stay mapped from one upload to the
next. Each buffer is an anonymous mmap and so starts on a page boundary: the block store can write
it straight to disk (server_min.blocks.direct_io) without going through the page cache. A speed trick
kept for the workloads W1 first push and W7 uploads.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Iterator

from starlette.requests import Request

from server_min.errors import TooLarge

KEEP_BUFFERS = 4  # as many as a client keeps uploads in flight
KEEP_BYTES = 32 << 20  # pages of an idle buffer past this are given back to the system


class BodyBuffers:
    """A small pool of page-aligned buffers of `capacity` bytes each (only the pages used take memory)."""

    def __init__(self, capacity: int, keep: int = KEEP_BUFFERS, keep_bytes: int = KEEP_BYTES) -> None:
        self.capacity = -(-capacity // mmap.PAGESIZE) * mmap.PAGESIZE
        self.keep = keep
        self.keep_bytes = min(self.capacity, -(-keep_bytes // mmap.PAGESIZE) * mmap.PAGESIZE)
        self._idle: list[tuple[mmap.mmap, int]] = []  # (buffer, how many of its bytes may be in memory)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self) -> Iterator[Body]:
        """A buffer for one body; it goes back to the pool when the block is left."""
        with self._lock:
            buffer, used = self._idle.pop() if self._idle else (_anonymous(self.capacity), 0)
        body = Body(buffer, used)
        try:
            yield body
        finally:
            self._give_back(buffer, max(used, body.high))

    def _give_back(self, buffer: mmap.mmap, used: int) -> None:
        if used > self.keep_bytes and hasattr(mmap, "MADV_DONTNEED"):
            buffer.madvise(mmap.MADV_DONTNEED, self.keep_bytes, self.capacity - self.keep_bytes)
            used = self.keep_bytes
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append((buffer, used))
                return
        with contextlib.suppress(BufferError):  # a view still referenced (by a traceback, say): the GC frees it
            buffer.close()


def _anonymous(size: int) -> mmap.mmap:
    """Private anonymous memory: pages appear when first touched, and MADV_DONTNEED really frees them."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class Body:
    """One request body in a leased buffer: `view` is what arrived, `size` bytes of it."""

    def __init__(self, buffer: mmap.mmap, used: int) -> None:
        self.buffer = buffer
        self.size = 0
        self.high = used

    @property
    def view(self) -> memoryview:
        return memoryview(self.buffer)[: self.size]

    async def read(self, request: Request, limit: int) -> memoryview:
        """Read the request body into the buffer; TooLarge past `limit` bytes (with or without Content-Length)."""
        limit = min(limit, len(self.buffer))
        target = memoryview(self.buffer)
        size = 0
        async for part in request.stream():
            end = size + len(part)
            if end > limit:
                raise TooLarge(f"request body is over the limit of {limit} bytes")
            target[size:end] = part
            size = end
            self.high = max(self.high, size)
        self.size = size
        return self.view
