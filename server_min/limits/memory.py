"""The login attempt log of one server process: a dict under a lock, bounded in size."""

from __future__ import annotations

import threading
from collections.abc import Callable

from server_min.limits.base import Attempts

MAX_KEYS = 300_000  # about 100 MiB at worst; an address flood must not grow the server without bound


class MemoryAttempts:
    """Records by key, forgotten when expired or, when full, oldest first."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._records: dict[str, Attempts] = {}
        self._mutex = threading.Lock()

    def get(self, key: str, now: float) -> Attempts | None:
        with self._mutex:
            record = self._records.get(key)
        return record if record is not None and record.expires > now else None

    def update(self, key: str, now: float, change: Callable[[Attempts | None], Attempts]) -> None:
        with self._mutex:
            if len(self._records) >= self.max_keys:
                self._prune(now)
            record = self._records.get(key)
            self._records[key] = change(record if record is not None and record.expires > now else None)

    def forget(self, key: str) -> None:
        with self._mutex:
            self._records.pop(key, None)

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._records)

    def _prune(self, now: float) -> None:
        for key in [k for k, r in self._records.items() if r.expires <= now]:
            del self._records[key]
        if len(self._records) >= self.max_keys:  # still full: forget the oldest half rather than grow
            for key in list(self._records)[: self.max_keys // 2]:
                del self._records[key]


__all__ = ["MemoryAttempts"]
