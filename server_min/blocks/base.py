"""The block-store interface: durable homes for block payloads, handed out and taken back as opaque locations.

A store keeps the bytes it is given and answers them back; it never learns what they are. Checking a
block against its SHA-256 is the service's job, on the way in and on the way out (rule 5), so every store
is checked the same way. Only a store reads the fields of the locations it made: the service keeps them
in the metadata and hands them back, and never computes an offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Location:
    """Where a store put one payload: `pack` names a unit of storage (a file, an object), `offset` and
    `length` the payload inside it. Opaque to everyone but the store that made it."""

    pack: str
    offset: int
    length: int


class BlockUnreadable(Exception):
    """A payload the store cannot give back whole (its pack is gone, cut short or unreadable).

    `reason` is one line for the operator and the client, e.g. 'pack 0a1b... is missing'.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreUnavailable(OSError):
    """A store that cannot be reached or refuses this server now (network down, credentials refused,
    throttled past its retries), or cannot be opened at all (a bucket that does not exist).

    Not damage: nothing is lost, so no block is marked damaged and the request may succeed later. An OSError,
    as a failing disk under blocks.local would raise. `reason` is one line for the operator.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class BlockStore(Protocol):
    """Where block payloads rest. Implementations: blocks.local (a folder), blocks.s3 (an S3 bucket),
    blocks.memory (tests); blocks.cache keeps recently read payloads of any of them on a local disk."""

    def put(self, payloads: Sequence[bytes | memoryview]) -> list[Location]:
        """Store `payloads` durably (all of them or none) and return the location of each, in order."""
        ...

    def get(self, location: Location) -> bytes:
        """The payload at `location`, exactly as stored, or BlockUnreadable."""
        ...

    def forget(self, locations: Sequence[Location]) -> None:
        """Drop any copy of `locations` kept beside the store (blocks.cache), so that the next `get` reads the
        store itself. The service calls it when a payload fails its SHA-256, before reading it once more."""
        ...

    def discard(self, locations: Sequence[Location]) -> None:
        """Take back the locations of one `put` that no metadata points to (its bytes may be freed now)."""
        ...

    def drop_unfinished(self) -> None:
        """Drop what interrupted writes left behind. Only a server starting up calls this: an admin command
        run beside a live server must never touch the writes in flight."""
        ...


__all__ = ["BlockStore", "BlockUnreadable", "Location", "StoreUnavailable"]
