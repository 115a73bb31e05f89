"""A box's commit transaction in memory: the box's own lock held throughout (never a global one), as a
store of many writers must; each write keeps an undo, replayed in reverse if the transaction fails."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from server_min.integrity import entry_checksum
from server_min.meta.memory.tables import CommitRow, under
from server_min.meta.records import CommitDone, Entry, NewEntry, PathHead, Stage, StaleChange

if TYPE_CHECKING:
    from server_min.meta.memory.store import MemoryMeta


def stale(op: str, parent: int, head: PathHead | None) -> bool:
    """True if a change written against `parent` no longer applies to the path's `head`."""
    current, present = (head.rev, head.present) if head else (0, False)
    if op == "put":
        return not (parent == current or (not present and parent == 0))
    return not (present and parent == current)


class MemoryCommitTx:
    """meta.base.CommitTx in memory: holds the box's lock; `undo` takes back its writes if it fails."""

    def __init__(self, meta: MemoryMeta, box_id: int) -> None:
        self.meta = meta
        self.box_id = box_id
        self.undo: list[Callable[[], None]] = []

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        return self.meta.block_sizes(digests)

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        return self.meta.readable_blocks(user_id, digests)

    def head(self) -> int:
        return self.meta.head(self.box_id)

    def heads_of(self, paths: Sequence[str]) -> dict[str, PathHead]:
        files = self.meta.files[self.box_id]
        return {p: files[p] for p in paths if p in files}

    def present_kinds(self, paths: Sequence[str]) -> dict[str, str]:
        with self.meta._mutex:
            present = self.meta._present(self.box_id)
            return {p: present[p].kind for p in paths if p in present}

    def holding(self, paths: Sequence[str], deeper: bool = False) -> set[str]:
        with self.meta._mutex:
            present = [p for p, h in self.meta.files[self.box_id].items() if h.present]
        found = set()
        for folder in paths:
            for p in present:
                if under(p, folder) and (not deeper or "/" in p[len(folder) + 1 if folder else 0 :]):
                    found.add(folder)
                    break
        return found

    def present_under(self, folder: str) -> list[str]:
        return sorted(p for p, h in self.meta.files[self.box_id].items() if h.present and p.startswith(folder + "/"))

    def _write(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None) -> CommitDone:
        meta, box_id = self.meta, self.box_id
        with meta._mutex:
            box = meta.boxes[box_id]
            seq, now = box.head + 1, time.time()
            files = meta.files[box_id]
            before = {e.path: files.get(e.path) for e in entries}
            journal, commits = meta.journal[box_id], meta.commit_rows[box_id]
            size = len(journal)
            for e in sorted(entries, key=lambda e: e.path):
                journal.append(Entry(box_id, seq, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, e.target,
                                     entry_checksum(box_id, seq, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode,
                                                    e.blocks, e.target)))
                files[e.path] = PathHead(seq, e.op == "put")
                for i in range(0, len(e.blocks), 32):
                    meta.block_paths[e.blocks[i : i + 32]].add((box_id, e.path))
            commits.append(CommitRow(seq, now, user_id, device_id, message, len(entries), key))
            meta.boxes[box_id] = dataclasses.replace(box, head=seq)

        def undo() -> None:
            del journal[size:]
            commits.pop()
            meta.boxes[box_id] = box
            for path, head in before.items():
                if head is None:
                    files.pop(path, None)
                else:
                    files[path] = head
        self.undo.append(undo)  # (block_paths only ever grow: an extra one grants nothing a block lacks)
        return CommitDone(seq, now, len(entries))

    def append(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None = None) -> CommitDone:
        return self._write(user_id, device_id, message, entries, key)

    def stage(self, stage: int) -> Stage | None:
        return self.meta.stages.get(stage)

    def add_staged(self, stage: int, entries: Sequence[NewEntry], parents: Sequence[int]) -> int:
        with self.meta._mutex:
            staged = self.meta.staged[stage]
            before = dict(staged)
            staged.update((e.path, (e, parent)) for e, parent in zip(entries, parents, strict=True))
            self.undo.append(lambda: (staged.clear(), staged.update(before)))
            return len(staged)

    def add_stage_folders(self, stage: int, folders: Mapping[str, bool]) -> None:
        with self.meta._mutex:
            noted = self.meta.staged_folders[stage]
            before = dict(noted)
            for folder, leaves in folders.items():
                noted[folder] = noted.get(folder, False) or leaves
            self.undo.append(lambda: (noted.clear(), noted.update(before)))

    def stage_folders(self, stage: int) -> dict[str, bool]:
        return dict(self.meta.staged_folders.get(stage, {}))

    def staged_kinds(self, stage: int, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        staged = self.meta.staged.get(stage, {})
        return {p: (staged[p][0].op, staged[p][0].kind) for p in paths if p in staged}

    def staged_under(self, stage: int, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        staged = self.meta.staged.get(stage, {})
        found = [(p, e.op, e.kind) for p, (e, _) in sorted(staged.items()) if p.startswith(folder + "/")]
        return found if limit < 0 else found[:limit]

    def staged_leaves_holding(self, stage: int, folders: Collection[str]) -> list[str]:
        staged = self.meta.staged.get(stage, {})
        wanted = set(folders)
        leaves = [p for p, (e, _) in staged.items()
                  if e.op == "put" and e.kind != "dir" and p.rpartition("/")[0] in wanted]
        return sorted(self.holding(leaves))

    def staged_outside(self, stage: int, prefix: str) -> bool:
        return any(not p.startswith(prefix + "/") for p in self.meta.staged.get(stage, {}))

    def staged_conflicts(self, stage: int) -> list[StaleChange]:
        files = self.meta.files[self.box_id]
        found = []
        for path, (e, parent) in sorted(self.meta.staged.get(stage, {}).items()):
            head = files.get(path)
            if stale(e.op, parent, head):
                found.append(StaleChange(path, parent, head.rev if head else 0, head.present if head else False))
        return found

    def append_staged(self, stage: int, user_id: int, device_id: int | None, message: str,
                      key: str | None = None) -> CommitDone:
        meta = self.meta
        with meta._mutex:
            entries = [e for e, _ in meta.staged[stage].values()]
            saved = (meta.stages[stage], meta.staged[stage], meta.staged_folders[stage])
            done = self._write(user_id, device_id, message, entries, key)
            meta._drop_stage(stage)

        def undo() -> None:
            meta.stages[stage], meta.staged[stage], meta.staged_folders[stage] = saved
        self.undo.append(undo)
        return done
