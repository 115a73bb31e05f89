"""Push: read and hash the changed files, upload the blocks the server lacks, and commit every
local change as one atomic commit that names the revision each change was based on."""

from __future__ import annotations

import bisect
import os
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from box_common.schemas import ChangeIn, CommitAnswer, CommitIn
from boxctl.chunking import Block, content_hash, hash_piece, read_small
from boxctl.engine import pending as pending_commit
from boxctl.engine.changes import Changes
from boxctl.engine.results import LocalChange, PushResult
from boxctl.local.index import PENDING_REV, IndexEntry, pack_sizes
from boxctl.transfer.pipeline import ordered_map
from boxctl.transfer.staging import CommitStager
from boxctl.transfer.upload import BlockUploader

SMALL_GROUP = 32  # small files read per pool task


class Push(Changes):
    """The push pipeline and how its commit is recorded in the index."""

    def push(self, message: str = "", dry_run: bool = False, hold: set[str] | None = None,
             settle: float = 0.0) -> PushResult:
        """Upload the blocks the server lacks and commit every local change in one atomic commit.

        Paths in `hold` (files still being written, as watch sees them) wait for a later push, and so
        do files modified less than `settle` seconds ago (a writer whose events have not arrived yet).
        """
        if not dry_run:
            pending_commit.finish(self)  # a push that died after its commit landed: record it, or the server refuses
        sure, maybe = self._candidates()
        roots = sorted({r for c in sure if (r := self.new_root(c.path)) is not None})
        if roots and not dry_run:
            # New local files outside a selective folder's selection: select their folder first (pulling
            # what the box already holds there, with the usual conflict rules), then push them.
            self.pull(roots, self.root)
            sure, maybe = self._candidates()
        skipped = list(self.workspace.skipped)
        held = set(hold or ())
        if settle > 0:
            now = time.time_ns()
            recent = now - int(settle * 1e9)  # a file dated in the future is not held forever
            held |= {c.path for c in sure + maybe if c.local is not None and c.local.kind == "file"
                     and recent < c.local.mtime_ns <= now}
        if held:
            skipped += [(c.path, "still being written; it will sync once closed") for c in sure + maybe
                        if c.path in held]
            sure = [c for c in sure if c.path not in held]
            maybe = [c for c in maybe if c.path not in held]
        files = [c for c in sure + maybe if c.op == "put" and c.kind == "file"]
        total = sum(c.local.size for c in files if c.local)
        if dry_run:
            changes = self.local_changes(refresh=False)
            return PushResult(changes, dry_run=True, skipped=skipped, ignored=list(self.workspace.ignored))
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            self.progress("push", done, total)

        known = self.index.block_ids() if files else set()  # blocks of committed versions: on the server
        uploader = BlockUploader(self.api, self.uploads, on_progress=advance, known=known, delta=self.delta)
        stager = CommitStager(self.api, self.box_id, uploader, self._change_json)
        changes: list[LocalChange] = [c for c in sure if not (c.op == "put" and c.kind == "file")]
        same: list[LocalChange] = []
        maybe_ids = {id(c) for c in maybe}
        small = [c for c in files if c.local is not None and c.local.size <= self.chunker.min_size]
        large = [c for c in files if c.local is not None and c.local.size > self.chunker.min_size]

        def queue(change: LocalChange, blocks: Iterable[Block] | OSError, after: os.stat_result | None = None) -> None:
            if not self._chunk_and_queue(change, blocks, uploader, skipped, after):
                return
            if id(change) in maybe_ids and self._unchanged(change):
                same.append(change)
            else:
                changes.append(change)
                stager.add(change)

        put_paths: list[str] = []
        try:
            # Reading and hashing run on a pool (hashlib and file reads release the GIL); blocks reach
            # the uploader in file order, with a bounded number of files or chunks in flight.
            with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="hash") as pool:
                # Small files go to the pool in groups: one task per file would cost more than the read.
                groups = [small[i : i + SMALL_GROUP] for i in range(0, len(small), SMALL_GROUP)]
                load = _load_small(self.root, self.chunker.min_size + 1)
                for group in ordered_map(load, groups, pool, ahead=4 * self.threads):
                    for change, blocks, after in group:
                        queue(change, blocks, after)
                    stager.poll()
                for change in large:
                    pieces = self.chunker.pieces(self.root / change.path)
                    queue(change, ordered_map(hash_piece, pieces, pool, ahead=2 * self.threads))
                    stager.poll()
            changes.sort(key=lambda c: c.path)
            if changes or same:
                # The new index entries are written in a transaction left open, committed once the server
                # answers, with its seq as revision.
                put_paths = self._write_entries(changes, same)
            stats = uploader.finish()
            stage = stager.wait()
            result = PushResult(changes, blocks_sent=stats.blocks_sent,
                                bytes_sent=stats.bytes_sent, bytes_plain=stats.bytes_plain, skipped=skipped,
                                blocks_delta=stats.blocks_delta, staged=len(stager.staged),
                                ignored=list(self.workspace.ignored))
            answer: CommitAnswer | None = None
            if changes:
                key = secrets.token_urlsafe(16)  # lets the commit be retried safely after a lost answer
                body: CommitIn = {
                    "message": message or _default_message(changes),
                    "device": self.config.device_id,
                    "key": key,
                    "changes": [self._change_json(c) for c in changes if not stager.is_staged(c)],  # the rest
                }
                if stage is not None:
                    body["stage"] = stage
                # Durable before it is sent: if this process dies once the commit lands, the next run
                # learns so by the key (pending.finish) instead of pushing again from the old revisions.
                pending_commit.save(self.root, key)
                answer = self.api.commit(self.box_id, body)
        except BaseException:
            uploader.pool.shutdown(wait=False, cancel_futures=True)
            stager.abandon()
            self.index.rollback()
            raise
        if not changes or answer is None:
            if same:
                self.index.commit()  # only the new stats of files found unchanged
            return result
        result.seq = int(answer["seq"])
        self._record_push(result.changes, put_paths, result.seq, int(answer["previous_head"]),
                          int(answer["changes"]))
        pending_commit.clear(self.root)
        result.wire_sent, result.wire_received = self.api.sent_bytes, self.api.received_bytes
        return result

    def _chunk_and_queue(self, change: LocalChange, blocks: Iterable[Block] | OSError, uploader: BlockUploader,
                         skipped: list[tuple[str, str]], after: os.stat_result | None = None) -> bool:
        """Queue one file's blocks for upload; False (and a note in `skipped`) if it changed meanwhile.

        `after` is the file's state once read, when the reader took it (else the path is looked at now).
        """
        digests: list[bytes] = []
        sizes: list[int] = []
        size = 0
        spans = change.base.block_spans() if change.base is not None and change.base.kind == "file" else []
        starts = [offset for _, offset, _ in spans]
        try:
            if isinstance(blocks, OSError):
                raise blocks
            for block in blocks:
                digests.append(block.digest)
                sizes.append(len(block.data))
                size += len(block.data)
                # The block of the previous version at the same offset is the natural base for a delta.
                at = bisect.bisect_right(starts, block.offset) - 1
                inside = at >= 0 and block.offset < spans[at][1] + spans[at][2]  # not past the old end
                uploader.add(block, spans[at][0] if inside else None)
        except FileNotFoundError:
            skipped.append((change.path, "deleted while pushing; it will sync next time"))
            return False
        except PermissionError:
            skipped.append((change.path, "cannot read it (permission denied)"))
            return False
        except OSError as exc:  # replaced by a FIFO, a device or a symlink while pushing
            skipped.append((change.path, f"cannot read it ({exc.strerror or exc}); it will sync next time"))
            return False
        before = change.local
        if after is not None:
            now: tuple[int, int] | None = (after.st_size, after.st_mtime_ns)
        else:
            seen = self.workspace.stat(change.path)
            now = (seen.size, seen.mtime_ns) if seen is not None and seen.kind == "file" else None
        if now is None or before is None or now != (before.size, before.mtime_ns) or size != now[0]:
            skipped.append((change.path, "changed while pushing; it will sync next time"))
            return False
        change.digests, change.size, change.sizes = b"".join(digests), size, sizes
        return True

    def _change_json(self, c: LocalChange) -> ChangeIn:
        parent = c.base.rev if c.base is not None else 0
        if c.op == "delete":
            return {"path": c.path, "op": "delete", "kind": c.kind, "parent_rev": parent}
        local = c.local
        assert local is not None
        return {
            "path": c.path, "op": "put", "kind": c.kind, "parent_rev": parent, "size": c.size,
            "mtime_ns": max(0, local.mtime_ns), "mode": local.mode,
            "blocks": [c.digests[i : i + 32].hex() for i in range(0, len(c.digests), 32)],
            "target": local.target,
        }

    def _write_entries(self, changes: list[LocalChange], same: list[LocalChange]) -> list[str]:
        """Open an index transaction holding the puts among pushed `changes`, their revision still unknown
        (PENDING_REV), and the new stats of the files found the `same`; return the puts' paths (push rolls
        the transaction back on any error; _record_push or push itself commits it)."""
        puts = [IndexEntry(c.path, c.kind, c.size, c.local.mtime_ns, c.local.inode, c.local.mode, PENDING_REV,
                           content_hash(c.kind, c.digests, c.local.target), c.digests, c.local.target,
                           pack_sizes(c.sizes))
                for c in changes if c.op == "put" and c.local is not None]
        self.index.begin()
        self.index.put(puts)
        self.index.put(self._refreshed(same))
        return [e.path for e in puts]

    def _record_push(self, changes: list[LocalChange], put_paths: list[str], seq: int, previous_head: int,
                     count: int) -> None:
        """Commit the index transaction that _write_entries opened: the puts (`put_paths`) get revision `seq`
        (`count`: how many changes the server says the commit holds)."""
        try:
            self.index.set_rev(put_paths, seq)
            self.index.delete([c.path for c in changes if c.op == "delete"])
            # Nothing else landed between our cursor and this commit: we are up to date with it.
            advanced = previous_head == self.index.cursor
            if advanced:
                self.index.set_cursor(seq)
            else:  # others' commits come first: the cursor stays, and status must not count this one
                self.index.add_own_commit(seq, count)
        except BaseException:
            self.index.rollback()
            raise
        self.index.commit()
        if advanced:
            self._ack(seq)


Loaded = tuple[LocalChange, list[Block] | OSError, os.stat_result | None]


def _load_small(root: Path, limit: int) -> Callable[[list[LocalChange]], list[Loaded]]:
    """A pool task reading a group of small files; a read error is returned, not raised, to be noted per file."""

    top = f"{root}/"  # plain strings: a Path per file costs more than reading a small file

    def load(group: list[LocalChange]) -> list[Loaded]:
        loaded: list[Loaded] = []
        for change in group:
            try:
                blocks, after = read_small(top + change.path, limit)
                loaded.append((change, blocks, after))
            except OSError as exc:
                loaded.append((change, exc, None))
        return loaded

    return load


def _default_message(changes: list[LocalChange]) -> str:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.status] = counts.get(c.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
