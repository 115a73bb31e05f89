"""The notifier interface: wake the long polls of a box when it gets a commit, or of a user when one of
its devices is revoked.

A wake-up only says "look again": the journal and each device's cursor are the durable queue, so a
notifier may lose nothing but time. A waiter is registered before the caller reads the head and stays
registered until it leaves, so a commit landing between that read and the wait still wakes it.

Implementations: notify.memory (one process). Several processes need a shared bus (PostgreSQL
LISTEN/NOTIFY or Redis) behind the same interface.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

KICKED = -1  # what a waiter of a kicked user wakes with


class Waiter(Protocol):
    """One long poll's registration."""

    async def wait(self, timeout: float) -> int | None:
        """The head published since the last wait (or since registering), KICKED if the user was kicked,
        None when `timeout` seconds pass first. Wake-ups in between collapse into one."""
        ...


class Notifier(Protocol):
    """Publish and wait by box; kick by user."""

    def publish(self, box_id: int, head: int) -> None:
        """Wake every waiter of `box_id`; safe to call from any thread."""
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


__all__ = ["KICKED", "Notifier", "Waiter"]
