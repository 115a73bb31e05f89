"""How much of the server one user may hold at once: long polls and uploads per user, and worker threads
kept for short requests.

Each long poll holds a connection and each upload a buffer and a worker thread for as long as it
lasts, so one user (or one stolen token) opening 1,100 of them starved everyone. Past its share a
user gets 429 with Retry-After (boxctl retries those). Uploads also run on their own few threads,
so that they can never take every worker thread from other users' short requests.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from anyio import CapacityLimiter

from server_min.errors import ServerError

LONG_POLLS_PER_USER = 64  # a watch holds one per synced folder: room for many folders and devices
UPLOADS_PER_USER = 8
UPLOAD_THREADS = 8  # of anyio's 40 worker threads: the other 32 stay for everything else


class TooBusy(ServerError):
    """429: this user already holds as many of these as it may; try again shortly."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class PerUser:
    """Counts what each user holds now (used from the event loop only, so no lock)."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._held: Counter[int] = Counter()

    @contextlib.contextmanager
    def hold(self, user_id: int) -> Iterator[None]:
        """Hold one slot of `user_id` for the block; TooBusy (429) if it holds `limit` already."""
        if self._held[user_id] >= self.limit:
            raise TooBusy(f"you have {self.limit} {self.what} open already; close some or try again shortly")
        self._held[user_id] += 1
        try:
            yield
        finally:
            self._held[user_id] -= 1
            if not self._held[user_id]:
                del self._held[user_id]

    def held(self, user_id: int) -> int:
        return self._held.get(user_id, 0)


class UploadThreads:
    """A limiter of worker threads apart from anyio's default ones (uploads, logins): one per app, made
    on first use (anyio makes a limiter for the event loop it is made on)."""

    def __init__(self, threads: int = UPLOAD_THREADS) -> None:
        self.threads = threads
        self._limiter: CapacityLimiter | None = None

    def __call__(self) -> CapacityLimiter:
        if self._limiter is None:
            self._limiter = CapacityLimiter(self.threads)
        return self._limiter


__all__ = ["LONG_POLLS_PER_USER", "UPLOADS_PER_USER", "PerUser", "TooBusy", "UploadThreads"]
