"""Wake-ups inside one server process: the local waiters woken directly, no bus, no thread.

Commits happen on worker threads; notify.local hops onto the event loop with call_soon_threadsafe.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from server_min.notify.local import LocalWaiter, LocalWaiters


class MemoryNotifier:
    """One process's notifier: a publish wakes this process's waiters, and only those."""

    def __init__(self) -> None:
        self.local = LocalWaiters()

    def waiter(self, box_id: int, user_id: int) -> AbstractContextManager[LocalWaiter]:
        return self.local.waiter(box_id, user_id)

    def publish(self, box_id: int, head: int) -> None:
        self.local.wake_box(box_id, head)

    def kick_user(self, user_id: int) -> None:
        self.local.wake_user(user_id)

    def waiting(self) -> int:
        return self.local.waiting()

    def close(self) -> None:
        """Nothing to release."""


__all__ = ["MemoryNotifier"]
