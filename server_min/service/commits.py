"""Commits: a push applied as one atomic commit or not at all (409 naming every conflicting path), and
commits sent in parts through a stage. The conflict check and the new seq are taken inside the box's
commit transaction (meta.base.CommitTx), so two commits to one box never interleave."""

from __future__ import annotations

from typing import Any

from server_min.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge, Unprocessable
from server_min.meta.base import BlockReads, CommitTx, MetaStore
from server_min.meta.records import NewEntry, PathHead, StaleChange
from server_min.notify.base import Notifier
from server_min.service import kinds
from server_min.service.access import Caller, Rights
from server_min.service.accounts import Accounts
from server_min.service.changes import checked_changes, strip

MAX_STAGED = 10_000_000  # in one staged commit


class Commits:
    """Commit, stage, and find a commit by its key."""

    def __init__(self, meta: MetaStore, rights: Rights, accounts: Accounts, notifier: Notifier) -> None:
        self.meta = meta
        self.rights = rights
        self.accounts = accounts
        self.notifier = notifier

    def commit(self, caller: Caller, box_id: int, message: str, device_id: int | None,
               changes: list[dict[str, Any]], key: str | None = None, stage: int | None = None) -> dict[str, Any]:
        """Apply `changes` as one atomic commit, or nothing at all (409 naming every conflicting path).

        With `stage`, the commit applies every change staged there (see add_to_stage) plus `changes`.
        `key`, chosen by the client, makes a retried commit safe: the same key answers with the
        commit it already made instead of committing twice.
        """
        access = self.rights.access(caller, box_id, write=True)
        device_id = self.accounts.check_device(caller, device_id)
        if key is not None:
            done = self.meta.commit_by_key(box_id, key)
            if done is not None:
                return {"seq": done.seq, "time": done.time, "previous_head": -1, "changes": done.changes,
                        "replayed": True}
        if not changes and stage is None:
            raise BadRequest("a commit needs at least one change")
        entries, parents = checked_changes(changes, access.prefix)
        with self.meta.commit_tx(box_id) as tx:
            self._check_blocks(tx, caller, entries)
            if stage is None:
                conflicts = _conflicts(tx.heads_of([e.path for e in entries]), entries, parents)
            else:
                self._own_stage(tx, caller, stage, access.prefix)
                if entries:
                    tx.add_staged(stage, entries, parents)
                    tx.add_stage_folders(stage, kinds.folders_of(entries))
                conflicts = tx.staged_conflicts(stage)
            if conflicts:
                raise Conflict(
                    f"{len(conflicts)} path(s) changed on the server since your last pull; "
                    "run 'boxctl pull' and push again",
                    conflicts=[{"path": c.path, "parent_rev": c.parent_rev, "head_rev": c.head_rev,
                                "present": c.present} for c in conflicts[:1000]],
                )
            seen = kinds.EntryPaths(tx, entries) if stage is None else kinds.StagedPaths(tx, stage)
            clash = kinds.clashes(tx, seen)
            if clash:
                raise kinds.refusal(clash, lambda path: strip(path, access.prefix))
            previous = tx.head()
            if stage is None:
                done = tx.append(caller.user_id, device_id, message, entries, key)
            else:
                done = tx.append_staged(stage, caller.user_id, device_id, message, key)
                if not done.changes:
                    raise BadRequest("a commit needs at least one change (the stage is empty)")
        if device_id is not None:
            self.meta.touch_device(device_id)
        self.notifier.publish(box_id, done.seq)
        return {"seq": done.seq, "time": done.time, "previous_head": previous, "changes": done.changes}

    def by_key(self, caller: Caller, box_id: int, key: str) -> dict[str, Any]:
        """The commit made with the client's `key` (NotFound if none): how a push that died before the
        answer reached it learns whether its commit landed, and with which seq."""
        self.rights.access(caller, box_id, write=True)
        done = self.meta.commit_by_key(box_id, key)
        if done is None:
            raise NotFound("no commit with this key")
        return {"seq": done.seq, "time": done.time, "changes": done.changes}

    def create_stage(self, caller: Caller, box_id: int) -> dict[str, Any]:
        """A new stage: a commit sent in parts. It lives a day unless a commit applies it sooner."""
        self.rights.access(caller, box_id, write=True)
        return {"stage": self.meta.create_stage(box_id, caller.user_id), "staged": 0}

    def add_to_stage(self, caller: Caller, box_id: int, stage: int, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """Check `changes` as a commit would (paths, blocks uploaded and readable, sizes) and stage them.

        Nothing is visible until the commit that names the stage; conflicts are judged then. A path
        staged again keeps its latest change, so a retried request does no harm.
        """
        access = self.rights.access(caller, box_id, write=True)
        if not changes:
            raise BadRequest("stage at least one change")
        entries, parents = checked_changes(changes, access.prefix)
        # Blocks are never taken away from the store or from a user who proved them, so this check holds
        # at the commit too; made outside the transaction, it keeps other writers waiting less.
        self._check_blocks(self.meta, caller, entries)
        with self.meta.commit_tx(box_id) as tx:
            self._own_stage(tx, caller, stage, access.prefix)
            total = tx.add_staged(stage, entries, parents)
            tx.add_stage_folders(stage, kinds.folders_of(entries))
            if total > MAX_STAGED:
                raise TooLarge(f"a commit may hold at most {MAX_STAGED} changes")
        return {"stage": stage, "staged": total}

    def _check_blocks(self, reads: BlockReads, caller: Caller, entries: list[NewEntry]) -> None:
        """422 unless every block of `entries` is stored, readable by the caller, and sums to its file's size."""
        wanted = list({e.blocks[i : i + 32] for e in entries for i in range(0, len(e.blocks), 32)})
        found = reads.block_sizes(wanted)
        readable = reads.readable_blocks(caller.user_id, list(found))
        stored = {d: size for d, size in found.items() if d in readable}
        absent = [d.hex() for d in wanted if d not in stored]
        if absent:
            raise Unprocessable(f"{len(absent)} block(s) of this commit are not on the server; upload them first",
                                missing=absent[:100])
        for e in entries:
            if e.kind == "file":
                total = sum(stored[e.blocks[i : i + 32]] for i in range(0, len(e.blocks), 32))
                if total != e.size:
                    raise Unprocessable(f"{e.path}: size {e.size} does not match its blocks ({total})")

    @staticmethod
    def _own_stage(tx: CommitTx, caller: Caller, stage: int, prefix: str) -> None:
        """404 unless `stage` is the caller's, in this box, and inside the folder the caller may write."""
        found = tx.stage(stage)
        if found is None or found.box_id != tx.box_id or found.user_id != caller.user_id:
            raise NotFound(f"no stage {stage} in this box: it was committed already, or expired; push again")
        if prefix and tx.staged_outside(stage, prefix):
            raise Forbidden(f"this stage holds paths outside the folder {prefix!r} you may write; push again")


def _conflicts(heads: dict[str, PathHead], entries: list[NewEntry], parents: list[int]) -> list[StaleChange]:
    """The changes whose path moved on since the revision they were based on."""
    conflicts = []
    for e, parent in zip(entries, parents, strict=True):
        head = heads.get(e.path)
        current, present = (head.rev, head.present) if head else (0, False)
        if e.op == "put" and (parent == current or (not present and parent == 0)):
            continue
        if e.op == "delete" and present and parent == current:
            continue
        conflicts.append(StaleChange(e.path, parent, current, present))
    return conflicts


__all__ = ["MAX_STAGED", "Commits"]
