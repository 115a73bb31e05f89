"""The domain records every metadata store speaks: what the service reads and writes, never rows.

Records are frozen dataclasses, except the two that a store makes by the hundred thousand (a journal
entry read, a change written): those are NamedTuples, which cost a tuple to build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from server_min.blocks.base import Location


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    password_hash: str | None
    created: float


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """Who a token hash belongs to: the user, the device it is bound to (None for an account token)."""

    user_id: int
    name: str
    device_id: int | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    user_id: int
    name: str
    kind: str
    created: float
    last_seen: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class DeviceCursor:
    """How far one synced folder of a device has acknowledged one box's journal."""

    box_id: int
    box: str
    cursor: int
    updated: float
    folder: str = ""  # the synced folder's id ('' for a client that does not name it)


@dataclass(frozen=True, slots=True)
class Box:
    id: int
    owner_id: int
    owner: str  # the owner's user name
    name: str
    min_size: int
    avg_size: int
    max_size: int
    created: float
    head: int  # the seq of its last commit (0: none yet)


@dataclass(frozen=True, slots=True)
class Member:
    """One share of a box: a user, the folder it is confined to ('' for the whole box), its role."""

    user_id: int
    name: str
    prefix: str
    role: str  # owner | editor | viewer


@dataclass(frozen=True, slots=True)
class MemberBox:
    """A box as one of its members holds it."""

    box: Box
    role: str
    prefix: str


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A block the block store holds: plain size, stored size and codec, and where it rests."""

    sha256: bytes
    size: int
    codec: int
    location: Location

    @property
    def stored_size(self) -> int:
        return self.location.length


class NewEntry(NamedTuple):
    """A checked change, as a commit writes it into the journal (`path` absolute in the box)."""

    path: str
    op: str  # put | delete
    kind: str  # file | dir | link
    size: int
    mtime_ns: int
    mode: int
    blocks: bytes  # the block digests, 32 bytes each
    target: str | None  # a link's target


class Entry(NamedTuple):
    """One journal entry: a version of one path, written by commit `seq` and never changed after."""

    box_id: int
    seq: int
    path: str
    op: str
    kind: str
    size: int
    mtime_ns: int
    mode: int
    blocks: bytes
    target: str | None
    checksum: bytes | None  # see integrity.entry_checksum


@dataclass(frozen=True, slots=True)
class PathHead:
    """The revision that last wrote a path, and whether the path is present after it."""

    rev: int
    present: bool


@dataclass(frozen=True, slots=True)
class StaleChange:
    """A change based on a revision its path has moved on from: why a commit is refused."""

    path: str
    parent_rev: int
    head_rev: int
    present: bool


@dataclass(frozen=True, slots=True)
class CommitDone:
    """A commit as it landed: its seq, time and how many changes it holds."""

    seq: int
    time: float
    changes: int


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """A commit for history: who, from which device, when, why, how many changes."""

    seq: int
    time: float
    user: str
    device: str | None
    device_id: int | None
    message: str
    changes: int


@dataclass(frozen=True, slots=True)
class Revision:
    """One journal entry with the commit that wrote it (the history of a path)."""

    entry: Entry
    commit: CommitInfo


@dataclass(frozen=True, slots=True)
class Stage:
    """A commit being sent in parts: its changes wait, seen by no reader, until one commit applies them."""

    id: int
    box_id: int
    user_id: int
    created: float


@dataclass(frozen=True, slots=True)
class Link:
    """A read-only link: only the SHA-256 of its token is kept."""

    id: int
    token_hash: str
    box_id: int
    path: str
    user_id: int
    created: float
    expires: float | None
    revoked: float | None


@dataclass(frozen=True, slots=True)
class LinkListing:
    """A link with the names that a listing shows."""

    link: Link
    box: str
    owner: str
    creator: str


__all__ = [
    "Box",
    "CommitDone",
    "CommitInfo",
    "Device",
    "DeviceCursor",
    "Entry",
    "Link",
    "LinkListing",
    "Member",
    "MemberBox",
    "NewEntry",
    "PathHead",
    "Revision",
    "Stage",
    "StaleChange",
    "StoredBlock",
    "TokenOwner",
    "User",
]
