"""The blocks each user proved to hold most recently, and their sizes, kept in memory.

A push uploads a batch of blocks, then stages the changes that use them: checking those changes
asks the database again about blocks this process recorded a moment before (two index lookups per
block, a real share of the server's work in a first push of many small files: the workload is W5).
What this process saw a user prove is remembered here, bounded; anything else is asked of the
database as before. Blocks are never taken from the store nor from a user who proved them, so a
remembered block stays true.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

PROVED_LIMIT = 50_000  # blocks per generation: two generations are about 15 MB at most


class ProvedBlocks:
    """user id -> {digest: plain size} of blocks recently stored or proved, in two generations.

    When the newer generation is full it becomes the older one and the oldest is dropped, so memory
    stays bounded while what was just uploaded is always found.
    """

    def __init__(self, limit: int = PROVED_LIMIT) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.newer: dict[int, dict[bytes, int]] = {}
        self.older: dict[int, dict[bytes, int]] = {}
        self.count = 0  # blocks in the newer generation, every user's

    def add(self, user_id: int, sizes: Iterable[tuple[bytes, int]]) -> None:
        """Remember that `user_id` proved to hold these (digest, plain size) blocks."""
        with self.lock:
            mine = self.newer.setdefault(user_id, {})
            for digest, size in sizes:
                mine[digest] = size
                self.count += 1
                if self.count >= self.limit:
                    self.older, self.newer, self.count = self.newer, {}, 0
                    mine = self.newer.setdefault(user_id, {})

    def sizes(self, user_id: int, digests: Iterable[bytes]) -> dict[bytes, int]:
        """The size of each of `digests` remembered for `user_id` (the others are unknown here)."""
        with self.lock:
            newer, older = self.newer.get(user_id, {}), self.older.get(user_id, {})
        found: dict[bytes, int] = {}
        for digest in digests:
            size = newer.get(digest)
            if size is None:
                size = older.get(digest)
            if size is not None:
                found[digest] = size
        return found
