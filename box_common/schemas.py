"""Typed wire records of the sync protocol (/v1): what a client sends in a commit and what the server
answers about commits, journal entries, trees and pages.

TypedDicts, not classes: a JSON answer is used as parsed, with no copy per entry (a pull of
100,000 paths reads 100,000 of them), and the types still say which keys each record has.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

Op = Literal["put", "delete"]
Kind = Literal["file", "dir", "link"]


class Chunking(TypedDict):
    """A box's content-defined chunking sizes, fixed when the box is made."""

    min: int
    avg: int
    max: int


class BoxInfo(TypedDict):
    """A box as one user sees it (`GET /boxes`, `POST /boxes`, `GET /boxes/{id}`)."""

    id: int
    name: str
    owner: str
    role: str  # owner | editor | viewer
    prefix: str  # a folder member's folder ('' for the whole box)
    head: int
    chunking: Chunking


class ChangeIn(TypedDict):
    """One change of a commit or a staged part: `parent_rev` names the revision it was based on."""

    path: str
    op: Op
    kind: Kind
    parent_rev: int
    size: NotRequired[int]
    mtime_ns: NotRequired[int]
    mode: NotRequired[int]
    blocks: NotRequired[list[str]]
    target: NotRequired[str | None]


class CommitIn(TypedDict):
    """The body of `POST /boxes/{id}/commits`; `key` lets a lost answer be retried safely."""

    message: str
    device: NotRequired[int]  # left out: the token's own device, if any (put, which has no synced folder)
    key: str
    changes: list[ChangeIn]
    stage: NotRequired[int]


class CommitAnswer(TypedDict):
    """A commit that landed: its seq, and the head before it (-1 when it had landed already)."""

    seq: int
    time: float
    previous_head: int
    changes: int


class Entry(TypedDict):
    """One journal entry: a path's version at commit `seq` (in a change page or a tree)."""

    seq: int
    path: str
    op: Op
    kind: Kind
    size: int
    mtime_ns: int
    mode: int
    blocks: list[str]
    content_hash: str
    target: str | None


class ChangesPage(TypedDict):
    """`GET /boxes/{id}/changes`: entries after the cursor, whole commits, and where to go on from."""

    entries: list[Entry]
    cursor: int
    head: int
    more: bool


class TreeAnswer(TypedDict):
    """`GET /boxes/{id}/tree`: the box (or a folder of it) as of commit `seq`."""

    seq: int
    head: int
    entries: list[Entry]


class PendingAnswer(TypedDict):
    """`GET /boxes/{id}/pending`: how many changes after a cursor wait to be pulled."""

    head: int
    waiting: int


class WaitAnswer(TypedDict):
    """`GET /boxes/{id}/wait`: whether the box moved past the cursor, and a pause the server asks for."""

    changes: bool
    head: int
    backoff: float


class Revision(TypedDict):
    """One version of a path in `GET /boxes/{id}/log?path=`."""

    rev: int
    path: str
    op: Op
    kind: Kind
    size: int
    content_hash: str
    time: float
    user: str
    device: str | None
    message: str


class CommitPath(TypedDict):
    path: str
    op: Op
    kind: Kind
    change: Literal["added", "modified", "deleted"]


class CommitInfo(TypedDict):
    """One commit in `GET /boxes/{id}/log`, with up to 1,000 of its paths."""

    seq: int
    time: float
    user: str
    device: str | None
    message: str
    changes: int
    paths: list[CommitPath]


class LogAnswer(TypedDict, total=False):
    """`GET /boxes/{id}/log`: `commits` for the box, `revisions` for one path."""

    commits: list[CommitInfo]
    revisions: list[Revision]
