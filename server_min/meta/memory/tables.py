"""The dicts of the in-memory metadata store, its one mutex, and the reads its parts share."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from server_min.meta.records import (
    Box,
    CommitInfo,
    Device,
    Entry,
    Link,
    NewEntry,
    PathHead,
    Stage,
    StoredBlock,
    TokenOwner,
    User,
)


@dataclass
class CommitRow:
    """One commit as the store keeps it (records.CommitInfo is what readers get)."""

    seq: int
    time: float
    user_id: int
    device_id: int | None
    message: str
    changes: int
    key: str | None


def under(path: str, prefix: str) -> bool:
    """Strictly under folder `prefix` ('' holds everything)."""
    return not prefix or path.startswith(prefix + "/")


class Tables:
    """Every table of the store as a dict; `_mutex` guards each method's reads and writes."""

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._box_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._ids = itertools.count(1)
        self.users: dict[int, User] = {}
        self.tokens: dict[str, TokenOwner] = {}
        self.device_rows: dict[int, Device] = {}
        self.cursors: dict[tuple[int, int, str], tuple[int, float]] = {}  # (device, box, folder)
        self.boxes: dict[int, Box] = {}
        self.shares: dict[tuple[int, int, str], str] = {}  # (box, user, prefix) -> role
        self.blocks: dict[bytes, StoredBlock] = {}
        self.uploads: set[tuple[int, bytes]] = set()
        self.block_paths: dict[bytes, set[tuple[int, str]]] = defaultdict(set)
        self.damaged: dict[bytes, str] = {}
        self.commit_rows: dict[int, list[CommitRow]] = defaultdict(list)
        self.journal: dict[int, list[Entry]] = defaultdict(list)
        self.files: dict[int, dict[str, PathHead]] = defaultdict(dict)
        self.stages: dict[int, Stage] = {}
        self.staged: dict[int, dict[str, tuple[NewEntry, int]]] = {}
        self.staged_folders: dict[int, dict[str, bool]] = {}
        self.link_rows: dict[int, Link] = {}

    def _id(self) -> int:
        return next(self._ids)

    def head(self, box_id: int) -> int:
        box = self.boxes.get(box_id)
        return box.head if box else 0

    def _present(self, box_id: int) -> dict[str, Entry]:
        """The entry that wrote each present path of the box."""
        entries = {(e.seq, e.path): e for e in self.journal[box_id]}
        return {p: entries[(h.rev, p)] for p, h in self.files[box_id].items() if h.present}

    def _visible(self, box_id: int) -> list[Entry]:
        """The journal up to the head (a commit under way is not seen)."""
        head = self.head(box_id)
        return [e for e in self.journal[box_id] if e.seq <= head]

    def _drop_stage(self, stage: int) -> None:
        self.stages.pop(stage, None)
        self.staged.pop(stage, None)
        self.staged_folders.pop(stage, None)

    def _info(self, c: CommitRow) -> CommitInfo:
        device = self.device_rows.get(c.device_id) if c.device_id is not None else None
        return CommitInfo(c.seq, c.time, self.users[c.user_id].name, device.name if device else None, c.device_id,
                          c.message, c.changes)

    def _commits(self, box_id: int, limit: int, before: int | None, keep: Callable[[int], bool]) -> list[CommitInfo]:
        """The newest visible commits before `before` whose seq `keep` accepts."""
        with self._mutex:
            found = [c for c in self.commit_rows[box_id]
                     if c.seq <= self.head(box_id) and (before is None or c.seq < before) and keep(c.seq)]
            return [self._info(c) for c in sorted(found, key=lambda c: -c.seq)[:limit]]

