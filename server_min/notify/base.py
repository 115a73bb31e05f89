"""The notifier interface: wake the long polls of a box when it gets a commit, or of a user when one of
its devices is revoked.

A wake-up only says "look again": the journal and each device's cursor are the durable queue, so a
notifier may lose nothing but time. A waiter is registered before the caller reads the head and stays
registered until it leaves, so a commit landing between that read and the wait still wakes it.

Implementations: notify.memory (one process); notify.postgres (LISTEN/NOTIFY) and notify.redis
(pub/sub) for several processes, over notify.bus. All keep their process's waiters in notify.local.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

KICKED = -1  # what a waiter of a kicked user wakes with
# What every waiter wakes with when wake-ups may have been missed (a bus connection came back): the
# head is unknown, so the long poll must read it again from the store.
LOOK_AGAIN = -2


class Waiter(Protocol):
    """One long poll's registration."""

    async def wait(self, timeout: float) -> int | None:
        """The head published since the last wait (or since registering), KICKED if the user was kicked,
        LOOK_AGAIN if wake-ups may have been missed, None when `timeout` seconds pass first. Wake-ups in
        between collapse into one (a kick wins). Any value but None means: read the head again; none
        of them is a head to trust."""
        ...


class Notifier(Protocol):
    """Publish and wait by box; kick by user."""

    def publish(self, box_id: int, head: int) -> None:
        """Wake every waiter of `box_id` (in every process); safe to call from any thread, never blocks long."""
        ...

    def kick_user(self, user_id: int) -> None:
        """Wake every waiter of `user_id` with KICKED (they re-check their tokens); any thread."""
        ...

    def waiter(self, box_id: int, user_id: int) -> AbstractContextManager[Waiter]:
        """A waiter registered for `box_id` and `user_id` while the context lasts (inside an event loop)."""
        ...

    def waiting(self) -> int:
        """How many waiters are registered now (in this process)."""
        ...

    def close(self) -> None:
        """Stop listening and release connections (a no-op for one process); waiters wake no more."""
        ...


__all__ = ["KICKED", "LOOK_AGAIN", "Notifier", "Waiter"]
