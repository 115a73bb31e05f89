"""Long polls: answer as soon as a box has commits after the caller's cursor, or at the timeout.

A member of one folder sees only commits inside it: a wake-up for another folder re-checks and waits
on, silently. Every check runs the token and the access rules again, so a revoked device gets its 401
and a removed share its 404 at the next wake-up: a commit, a revocation of one of the user's devices,
or RECHECK seconds at most.
"""

from __future__ import annotations

import time
from typing import Any

from anyio import to_thread

from server_min.notify.base import Notifier
from server_min.service.accounts import Accounts
from server_min.service.journal import Journal

RECHECK = 30.0  # a long poll re-checks its token and access at least this often


class Wakeups:
    """Long polls over a notifier."""

    def __init__(self, notifier: Notifier, accounts: Accounts, journal: Journal) -> None:
        self.notifier = notifier
        self.accounts = accounts
        self.journal = journal

    async def wait(self, token: str | None, user_id: int, box_id: int, cursor: int, timeout: float) -> dict[str, Any]:
        """{changes, head, backoff}: whether the box has commits after `cursor` the caller may see."""

        def check() -> int:
            return self.journal.head(self.accounts.authenticate(token), box_id, cursor)

        deadline = time.monotonic() + timeout
        # Registered before the head is read, so a commit landing in between still wakes it.
        with self.notifier.waiter(box_id, user_id) as waiter:
            while True:
                head = await to_thread.run_sync(check)
                remaining = deadline - time.monotonic()
                if head > cursor or remaining <= 0:
                    return {"changes": head > cursor, "head": head, "backoff": 0}
                woken = await waiter.wait(min(remaining, RECHECK))
                if woken is None and remaining <= RECHECK:
                    head = await to_thread.run_sync(check)
                    return {"changes": head > cursor, "head": head, "backoff": 0}


__all__ = ["RECHECK", "Wakeups"]
