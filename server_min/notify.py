"""In-process wake-ups for long polls: a waiter per request, woken when its box gets a commit.

Waiting costs no thread: each long poll is an asyncio future. Commits happen on worker
threads, so `publish` hops onto the event loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Notifier:
    """Maps a box id to the futures of the long polls waiting on it."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Future[int]]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop the waiters live on."""
        self._loop = loop

    def register(self, box_id: int) -> asyncio.Future[int]:
        """A future that resolves with the new head the next time `box_id` gets a commit."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[int] = loop.create_future()
        self._waiters[box_id].add(future)
        return future

    def unregister(self, box_id: int, future: asyncio.Future[int]) -> None:
        """Forget a waiter (after it woke or timed out)."""
        waiters = self._waiters.get(box_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[box_id]

    def waiting(self) -> int:
        """How many long polls are waiting now."""
        return sum(len(w) for w in self._waiters.values())

    def publish(self, box_id: int, head: int) -> None:
        """Wake every waiter of `box_id`; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wake, box_id, head)

    def _wake(self, box_id: int, head: int) -> None:
        for future in self._waiters.pop(box_id, set()):
            if not future.done():
                future.set_result(head)
