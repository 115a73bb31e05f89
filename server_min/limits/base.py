"""The login attempt log: each key's wrong passwords and lock-outs, which every server process may share.

service.passwords decides (limits, windows, doubling locks); a log only keeps one record per key and
replaces it atomically, so two processes counting failures of one key at once never lose one. Times
are wall-clock seconds (time.time): the monotonic clocks of two processes do not compare.

Implementations: limits.memory (one process, the default), limits.redis, limits.postgres.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Attempts:
    """A key's record: recent wrong passwords, its lock-out, and when it may be forgotten."""

    failures: tuple[float, ...] = ()  # times of the wrong passwords counted towards the next lock-out
    locked_until: float = 0.0
    strikes: int = 0  # lock-outs so far: each one doubles the next
    expires: float = 0.0  # after this the record is as good as absent (stores drop it when they like)


class AttemptLog(Protocol):
    """One record per key ('user:NAME', 'addr:IP', 'pair:NAME\\nIP'), replaced atomically."""

    def get(self, key: str, now: float) -> Attempts | None:
        """The record of `key`, or None if it has none or it expired by `now`."""
        ...

    def update(self, key: str, now: float, change: Callable[[Attempts | None], Attempts]) -> None:
        """Replace the record of `key` (None if none or expired by `now`) with change(record), atomically
        with respect to every other update of `key` in any process. `change` may run more than once
        (a retried transaction): it must only compute."""
        ...

    def forget(self, key: str) -> None:
        """Drop the record of `key`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def digest(key: str) -> bytes:
    """What shared stores index a key by: names are the user's, of any length and any code points."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


__all__ = ["AttemptLog", "Attempts", "digest"]
