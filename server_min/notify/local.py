"""The waiters of one server process: a registry by box and by user, and the fan-out that wakes them.

Every notifier keeps its process's long polls here; the buses (notify.postgres, notify.redis) only
decide when to call `wake_box`, `wake_user` or `wake_all`. Waiters live on the event loop, so every
wake-up, whichever thread calls it, hops onto the loop with call_soon_threadsafe and touches the
registry there only.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from server_min.notify.base import KICKED, LOOK_AGAIN


class LocalWaiter:
    """A long poll's registration: the latest wake-up since its last wait, kept until it waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._woken: int | None = None
        self._future: asyncio.Future[None] | None = None

    def wake(self, head: int) -> None:
        """On the event loop: note the wake-up and release a wait in progress. Wake-ups collapse into one: a
        kick wins, else the highest head (a bus delivers heads out of order when several threads publish)."""
        if self._woken is None or head == KICKED:
            self._woken = head
        elif self._woken != KICKED:
            self._woken = max(self._woken, head)
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


class LocalWaiters:
    """Maps a box id, and a user id, to the waiters of this process's long polls."""

    def __init__(self) -> None:
        self._by_box: dict[int, set[LocalWaiter]] = defaultdict(set)
        self._by_user: dict[int, set[LocalWaiter]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def waiter(self, box_id: int, user_id: int) -> Iterator[LocalWaiter]:
        """A waiter registered for `box_id` and `user_id` while the context lasts (inside an event loop)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        waiter = LocalWaiter(loop)
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

    def waiting(self) -> int:
        """How many waiters are registered now."""
        return sum(len(w) for w in self._by_box.values())

    def wake_box(self, box_id: int, head: int) -> None:
        """Wake the waiters of `box_id` with `head` (from any thread)."""
        self._later(self._wake, self._by_box, box_id, head)

    def wake_user(self, user_id: int) -> None:
        """Wake the waiters of `user_id` with KICKED (from any thread)."""
        self._later(self._wake, self._by_user, user_id, KICKED)

    def wake_all(self) -> None:
        """Wake every waiter with LOOK_AGAIN (from any thread): wake-ups may have been missed."""
        self._later(self._wake_all)

    def _later(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():  # no long poll ever waited, or its loop ended: no one to wake
            return
        with suppress(RuntimeError):  # the loop closed after the check above (tests, shutdown): no one to wake
            loop.call_soon_threadsafe(callback, *args)

    @staticmethod
    def _wake(index: dict[int, set[LocalWaiter]], key: int, head: int) -> None:
        for waiter in list(index.get(key, ())):
            waiter.wake(head)

    def _wake_all(self) -> None:
        for waiters in list(self._by_box.values()):
            for waiter in list(waiters):
                waiter.wake(LOOK_AGAIN)


__all__ = ["LocalWaiter", "LocalWaiters"]
