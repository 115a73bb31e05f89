"""A block store in memory: for tests, and the simplest reading of the BlockStore contract."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence

from server_min.blocks.base import BlockUnreadable, Location


class MemoryBlocks:
    """One bytes object per pack, in a dict."""

    def __init__(self) -> None:
        self.packs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, payloads: Sequence[bytes | memoryview]) -> list[Location]:
        pack = secrets.token_hex(16)
        locations, parts, position = [], [], 0
        for payload in payloads:
            data = bytes(payload)
            locations.append(Location(pack, position, len(data)))
            parts.append(data)
            position += len(data)
        with self._lock:
            self.packs[pack] = b"".join(parts)
        return locations

    def get(self, location: Location) -> bytes:
        with self._lock:
            pack = self.packs.get(location.pack)
        if pack is None:
            raise BlockUnreadable(f"pack {location.pack} is missing")
        data = pack[location.offset : location.offset + location.length]
        if len(data) != location.length:
            raise BlockUnreadable(f"pack {location.pack} is shorter than the index says")
        return data

    def forget(self, locations: Sequence[Location]) -> None:
        """Nothing to drop: every read comes from the store itself."""

    def discard(self, locations: Sequence[Location]) -> None:
        with self._lock:
            for loc in locations:
                self.packs.pop(loc.pack, None)

    def drop_unfinished(self) -> None:
        return None  # a put is all or nothing in memory: nothing is ever left half-written


__all__ = ["MemoryBlocks"]
