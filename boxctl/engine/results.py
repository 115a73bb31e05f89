"""What the engine reports: a local change, and the results of status, push and pull."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boxctl.local.index import IndexEntry
from boxctl.local.workspace import (
    LocalEntry,
)

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


@dataclass
class LocalChange:
    """One path that differs from the index: what to commit for it."""

    path: str
    op: str  # put | delete
    kind: str
    local: LocalEntry | None
    base: IndexEntry | None
    digests: bytes = b""
    size: int = 0
    sizes: list[int] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.op == "delete":
            return "deleted"
        return "added" if self.base is None else "modified"


@dataclass
class Status:
    """What `boxctl status` reports."""

    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    remote_waiting: int = 0
    cursor: int = 0
    head: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # left out by .boxignore (folders end with '/')
    ignore_rules: list[str] = field(default_factory=list)
    ignore_synced: bool = False  # the .boxignore came with the box (another device or user may have set it)

    @property
    def clean(self) -> bool:
        return not (self.added or self.modified or self.deleted)

    def as_json(self) -> dict[str, Any]:
        return {
            "added": self.added, "modified": self.modified, "deleted": self.deleted,
            "remote_waiting": self.remote_waiting, "cursor": self.cursor, "head": self.head,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "ignored": self.ignored, "ignore_rules": self.ignore_rules, "ignore_synced": self.ignore_synced,
        }


@dataclass
class PushResult:
    """What a push did (or, with dry_run, would do)."""

    changes: list[LocalChange]
    seq: int | None = None
    blocks_sent: int = 0
    bytes_sent: int = 0
    bytes_plain: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False
    blocks_delta: int = 0
    wire_sent: int = 0
    wire_received: int = 0
    staged: int = 0  # changes sent ahead in parts of a staged commit (the rest went with the commit)
    ignored: list[str] = field(default_factory=list)  # left out by .boxignore

    def as_json(self) -> dict[str, Any]:
        paths: dict[str, list[str]] = {"added": [], "modified": [], "deleted": []}
        for c in self.changes:
            paths[c.status].append(c.path)
        return {
            "seq": self.seq, "dry_run": self.dry_run, "blocks_delta": self.blocks_delta,
            "changes_staged": self.staged,
            "wire_bytes_sent": self.wire_sent, "wire_bytes_received": self.wire_received,
            **paths,
            "blocks_sent": self.blocks_sent, "bytes_sent": self.bytes_sent, "bytes_plain": self.bytes_plain,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "ignored": self.ignored,
        }


@dataclass
class PullResult:
    """What a pull did."""

    written: list[str] = field(default_factory=list)  # added or modified here
    added: list[str] = field(default_factory=list)  # those of `written` this folder did not have synced before
    deleted: list[str] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    cursor: int = 0
    bytes_received: int = 0
    blocks_reused: int = 0
    damaged: list[dict[str, Any]] = field(default_factory=list)  # {path, seq, blocks, reason}: not written
    held: list[int] = field(default_factory=list)  # seqs refused by a folder swapped mid-pull: asked for again

    @property
    def modified(self) -> list[str]:
        """The written paths that replaced a synced version."""
        added = set(self.added)
        return [p for p in self.written if p not in added]

    def as_json(self) -> dict[str, Any]:
        return {
            "written": self.written, "added": self.added, "modified": self.modified, "deleted": self.deleted,
            "conflicts": self.conflicts, "kept": self.kept,
            "refused": [{"path": p, "reason": r} for p, r in self.refused], "damaged": self.damaged,
            "cursor": self.cursor,
            "bytes_received": self.bytes_received, "blocks_reused": self.blocks_reused,
        }
