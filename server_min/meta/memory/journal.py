"""Reading the in-memory journal: pages of changes, snapshots, history, and the commit a key made."""

from __future__ import annotations

import time
from collections.abc import Sequence

from server_min.meta.base import STAGE_TTL
from server_min.meta.memory.tables import Tables, under
from server_min.meta.records import CommitDone, CommitInfo, Entry, Revision, Stage


class JournalMem(Tables):
    """The reads of meta.base.JournalStore over the whole box, and stage creation."""

    def create_stage(self, box_id: int, user_id: int) -> int:
        with self._mutex:
            for old in [s.id for s in self.stages.values() if s.created < time.time() - STAGE_TTL]:
                self._drop_stage(old)
            stage = Stage(self._id(), box_id, user_id, time.time())
            self.stages[stage.id] = stage
            self.staged[stage.id] = {}
            self.staged_folders[stage.id] = {}
            return stage.id

    def commit_by_key(self, box_id: int, key: str) -> CommitDone | None:
        with self._mutex:
            c = next((c for c in self.commit_rows[box_id] if c.key == key), None)
            return None if c is None else CommitDone(c.seq, c.time, c.changes)

    def changes(self, box_id: int, cursor: int, limit: int) -> tuple[list[Entry], int]:
        with self._mutex:
            upto, total = cursor, 0
            for c in self.commit_rows[box_id]:
                if c.seq <= cursor or c.seq > self.head(box_id):
                    continue
                if total and total + c.changes > limit:
                    break
                upto, total = c.seq, total + c.changes
            return sorted((e for e in self.journal[box_id] if cursor < e.seq <= upto),
                          key=lambda e: (e.seq, e.path)), upto

    def tree(self, box_id: int, seq: int, prefix: str) -> list[Entry]:
        with self._mutex:
            latest: dict[str, Entry] = {}
            for e in self.journal[box_id]:
                if e.seq <= seq and (e.path == prefix or under(e.path, prefix)):
                    latest[e.path] = e
            return [latest[p] for p in sorted(latest) if latest[p].op == "put"]

    def seq_at(self, box_id: int, when: float) -> int:
        with self._mutex:
            return max((c.seq for c in self.commit_rows[box_id] if c.time <= when), default=0)

    def commits(self, box_id: int, limit: int, before: int | None) -> list[CommitInfo]:
        return self._commits(box_id, limit, before, lambda _: True)

    def commit_paths(self, box_id: int, seq: int, limit: int) -> list[Entry]:
        with self._mutex:
            return sorted((e for e in self.journal[box_id] if e.seq == seq), key=lambda e: e.path)[:limit]

    def path_history(self, box_id: int, prefix: str, limit: int) -> list[Revision]:
        with self._mutex:
            commits = {c.seq: c for c in self.commit_rows[box_id]}
            found = sorted((e for e in self._visible(box_id) if e.path == prefix or under(e.path, prefix)),
                           key=lambda e: (-e.seq, e.path))[:limit]
            return [Revision(e, self._info(commits[e.seq])) for e in found]

    def present_before(self, box_id: int, seq: int, paths: Sequence[str]) -> set[str]:
        with self._mutex:
            wanted = set(paths)
            last: dict[str, Entry] = {}
            for e in self.journal[box_id]:
                if e.seq < seq and e.path in wanted and (e.path not in last or last[e.path].seq < e.seq):
                    last[e.path] = e
            return {path for path, e in last.items() if e.op == "put"}

    def count_after(self, box_id: int, cursor: int) -> int:
        with self._mutex:
            return sum(c.changes for c in self.commit_rows[box_id] if cursor < c.seq <= self.head(box_id))
