"""Wake-ups inside one server process: a waiter per long poll, an asyncio future, no thread.

Commits happen on worker threads, so `publish` hops onto the event loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from server_min.notify.base import KICKED


class MemoryWaiter:
    """A long poll's registration: the latest wake-up since its last wait, kept until it waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._woken: int | None = None
        self._future: asyncio.Future[None] | None = None

    def wake(self, head: int) -> None:
        """On the event loop: note the wake-up (a kick wins over a head) and release a wait in progress."""
        self._woken = head if self._woken != KICKED else KICKED
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float) -> int | None:
        if self._woken is None:
            self._future = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._future), timeout)
            except TimeoutError:
                return None
            finally:
                self._future = None
        woken, self._woken = self._woken, None
        return woken


class MemoryNotifier:
    """Maps a box id, and a user id, to the waiters of its long polls."""

    def __init__(self) -> None:
        self._by_box: dict[int, set[MemoryWaiter]] = defaultdict(set)
        self._by_user: dict[int, set[MemoryWaiter]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def waiter(self, box_id: int, user_id: int) -> Iterator[MemoryWaiter]:
        loop = asyncio.get_running_loop()
        self._loop = loop
        waiter = MemoryWaiter(loop)
        self._by_box[box_id].add(waiter)
        self._by_user[user_id].add(waiter)
        try:
            yield waiter
        finally:
            for index, key in ((self._by_box, box_id), (self._by_user, user_id)):
                waiters = index.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del index[key]

    def publish(self, box_id: int, head: int) -> None:
        self._later(self._by_box, box_id, head)

    def kick_user(self, user_id: int) -> None:
        self._later(self._by_user, user_id, KICKED)

    def waiting(self) -> int:
        return sum(len(w) for w in self._by_box.values())

    def _later(self, index: dict[int, set[MemoryWaiter]], key: int, head: int) -> None:
        """Wake the waiters of `key` on the event loop (from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():  # else no long poll ever waited: no one to wake
            loop.call_soon_threadsafe(self._wake, index, key, head)

    @staticmethod
    def _wake(index: dict[int, set[MemoryWaiter]], key: int, head: int) -> None:
        for waiter in list(index.get(key, ())):
            waiter.wake(head)


__all__ = ["MemoryNotifier", "MemoryWaiter"]
