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
        self._by_user: dict[int, set[asyncio.Future[int]]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop the waiters live on."""
        self._loop = loop

    def register(self, box_id: int, user_id: int | None = None) -> asyncio.Future[int]:
        """A future that resolves with the new head the next time `box_id` gets a commit (or -1 when
        `user_id`, if given, is kicked: see kick_user)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[int] = loop.create_future()
        self._waiters[box_id].add(future)
        if user_id is not None:
            self._by_user[user_id].add(future)
        return future

    def unregister(self, box_id: int, future: asyncio.Future[int], user_id: int | None = None) -> None:
        """Forget a waiter (after it woke or timed out)."""
        for index, key in ((self._waiters, box_id), (self._by_user, user_id)):
            waiters = index.get(key) if key is not None else None
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del index[key]

    def kick_user(self, user_id: int) -> None:
        """Wake every waiter of `user_id` (its device was revoked: each re-checks its token); any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._kick, user_id)

    def _kick(self, user_id: int) -> None:
        for future in self._by_user.pop(user_id, set()):
            if not future.done():
                future.set_result(-1)

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
