"""The sync rules: status, push, pull, conflicts and restore. No printing and no HTTP details here.

The engine compares three states of every path: the disk now (workspace), the disk at the
last sync (index), and the server (journal entries after the cursor). Push sends local changes
as one atomic commit that names the revision each change was based on; pull applies remote
changes without ever overwriting a local edit (rules 3 and 4 of DESIGN.md).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from box_common.paths import (
    InvalidPath,
    is_under,
    normalize_path,
    normalize_prefix,
    parent_paths,
)
from box_common.schemas import ChangeIn, CommitAnswer, CommitIn, LogAnswer, TreeAnswer
from box_common.units import format_size
from boxctl import kinds, prescan
from boxctl import pending as pending_commit
from boxctl import temps as pull_temps
from boxctl.api import Api
from boxctl.chunking import Block, Chunker, content_hash, hash_piece, read_small
from boxctl.config import BoxConfig
from boxctl.conflicts import conflict_name, move_aside
from boxctl.dirfd import SafeRoot
from boxctl.durable import fsync_write, rename_noreplace, sync_filesystem, write_temp
from boxctl.errors import AuthError, BoxError, IntegrityError, NotFound, ServerRefused, UsageError
from boxctl.index import PENDING_REV, Index, IndexEntry, pack_sizes
from boxctl.linkcheck import check_link_target
from boxctl.pipeline import ordered_map
from boxctl.repair import RepairResult, repair_blocks
from boxctl.staging import CommitStager
from boxctl.transfer import BlockUploader, DamagedBlock, default_jobs, default_uploads, download_blocks
from boxctl.transport import Transport
from boxctl.workspace import (
    IGNORE_FILE,
    PARTIAL_PREFIX,
    LocalEntry,
    PendingScan,
    UnsafePath,
    Workspace,
    link_temp,
    make_link,
    remove_path,
)

Progress = Callable[[str, int, int], None]  # (phase, done, total)
SMALL_FILE = 1 << 20  # pulled files up to this size are flushed in batches
SMALL_GROUP = 32  # small files read per pool task
# What one pull accepts from the change feed, so a hostile server cannot keep it looping forever.
MAX_FEED_PAGES = 100_000
MAX_FEED_ENTRIES = 10_000_000
PARALLEL_SCAN = 20_000  # indexed paths from which a scan is shared out among processes (a fork costs ~10 ms)
FREE_SPACE_MARGIN = 64 << 20  # a pull leaves at least this much of the disk free
PLACE_TRIES = 5  # a path edited again and again while a pull places its remote version: give up after this


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

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    cursor: int = 0
    bytes_received: int = 0
    blocks_reused: int = 0
    damaged: list[dict[str, Any]] = field(default_factory=list)  # {path, seq, blocks, reason}: not written
    held: list[int] = field(default_factory=list)  # seqs refused by a folder swapped mid-pull: asked for again

    def as_json(self) -> dict[str, Any]:
        return {
            "written": self.written, "deleted": self.deleted, "conflicts": self.conflicts, "kept": self.kept,
            "refused": [{"path": p, "reason": r} for p, r in self.refused], "damaged": self.damaged,
            "cursor": self.cursor,
            "bytes_received": self.bytes_received, "blocks_reused": self.blocks_reused,
        }


class Engine:
    """Sync rules for one synced folder, talking to the server through its API client."""

    def __init__(self, root: Path, config: BoxConfig, api: Api | Transport, progress: Progress | None = None,
                 threads: int | None = None, delta: bool = True) -> None:
        self.root = root
        self.config = config
        self.api = api if isinstance(api, Api) else Api(api)
        self.index = Index(root / ".box" / "index.db")
        self.workspace = Workspace(root)
        self.chunker = Chunker(config.min_size, config.avg_size, config.max_size)
        self.progress = progress or _no_progress
        # `threads` (--jobs) sets both; by default reading, hashing and downloads use one thread per core,
        # and uploads keep more batches in flight (see default_uploads).
        self.threads = threads or default_jobs()
        self.uploads = threads or default_uploads()
        self.delta = delta
        self._hashes: dict[tuple[str, int, int, int], str] = {}  # see _file_hash

    def close(self) -> None:
        self.index.close()

    @property
    def transport(self) -> Transport:
        """The transport under the API client (settable: a test swaps in a fake server this way)."""
        return self.api.transport

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self.api = Api(transport)

    @property
    def box_id(self) -> int:
        return self.config.box_id

    def check_can_push(self) -> None:
        """Refuse a push from a viewer before anything is uploaded (the server refuses the commit anyway)."""
        info = self.api.box(self.box_id)
        if info.get("role") not in ("owner", "editor"):
            where = f" (folder {info['prefix']!r})" if info.get("prefix") else ""
            raise AuthError(f"you have {info.get('role')} access to {self.config.owner}/{self.config.box_name}"
                            f"{where}: you can pull, but pushing needs editor access; nothing was sent")

    def selected(self, path: str) -> bool:
        """True if `path` is kept on this device (selective sync keeps only some folders or files)."""
        only = self.config.only
        return not only or any(is_under(path, prefix) for prefix in only)

    def new_root(self, path: str) -> str | None:
        """For a path outside the selection, the folder (or file) to add to it so that it syncs;
        None for a folder that only exists here to hold selected paths."""
        if self.selected(path):
            return None
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            head = "/".join(parts[:depth])
            if not any(is_under(prefix, head) for prefix in self.config.only):
                return head
        return None

    # --- local changes ----------------------------------------------------------------------

    def _candidates(self, started: PendingScan | None = None) -> tuple[list[LocalChange], list[LocalChange]]:
        """Paths that surely changed, and files whose stat changed and that must be hashed to tell.

        `started` is a walk of the folder begun at start-up (see prescan), to collect instead of walking.
        """
        base = self.index.stats()
        # Shared out when the folder is big, or unknown yet (a first push reads everything anyway).
        shared = len(base) >= PARALLEL_SCAN or not base
        scan = self.workspace.scan_stats(workers=self.threads if shared else 1, started=started)
        pull_temps.clean(self.root, self.workspace.temps)  # left by a pull that was cut off: never a user's file
        sure_paths: list[tuple[str, LocalEntry | None]] = []
        maybe_paths: list[tuple[str, LocalEntry]] = []
        selective = bool(self.config.only)
        for path, found in scan.items():
            old = base.get(path)
            if old == found:
                continue  # the common case, one tuple comparison: unchanged since the last sync
            if selective and not self.selected(path) and (old is not None or self.new_root(path) is None):
                continue  # a folder that only holds selected paths
            local = LocalEntry(path, *found)
            if old is None or old[0] != local.kind:
                sure_paths.append((path, local))
            elif local.kind == "file":
                if old[1:5] != (local.size, local.mtime_ns, local.inode, local.mode):
                    maybe_paths.append((path, local))
            elif local.kind == "link" and old[5] != local.target:
                sure_paths.append((path, local))
        # A folder that could not be listed (no permission) hides what is inside: nothing there is deleted.
        unknown = tuple(f"{rel}/" for rel in self.workspace.unlisted)
        for path in sorted(base.keys() - scan.keys()):
            if (not selective or self.selected(path)) and not self.workspace.is_ignored(path, base[path][0] == "dir") \
                    and not (unknown and path.startswith(unknown)):
                sure_paths.append((path, None))
        # Full index entries (block lists) only for the few paths that changed.
        full = self.index.get_many([p for p, _ in sure_paths] + [p for p, _ in maybe_paths]) if base else {}
        sure = [LocalChange(p, "put" if local else "delete", local.kind if local else full[p].kind, local, full.get(p))
                for p, local in sure_paths]
        maybe = [LocalChange(p, "put", "file", local, full.get(p)) for p, local in maybe_paths]
        return sure, maybe

    def _unchanged(self, change: LocalChange) -> bool:
        """True if a hashed file turns out to hold what the index says (only its stat moved)."""
        old = change.base
        return (old is not None and old.kind == "file" and old.mode == (change.local.mode if change.local else -1)
                and old.content_hash == content_hash("file", change.digests, None))

    def _refresh(self, changes: list[LocalChange]) -> None:
        """Record the new stat of files whose content did not change, so they are not hashed again."""
        entries = self._refreshed(changes)
        if entries:
            with self.index.transaction() as conn:
                self.index.put(entries, conn)

    @staticmethod
    def _refreshed(changes: list[LocalChange]) -> list[IndexEntry]:
        """The index entries of files whose content did not change, with their new stat."""
        return [IndexEntry(c.path, c.kind, c.local.size, c.local.mtime_ns, c.local.inode, c.base.mode, c.base.rev,
                           c.base.content_hash, c.base.blocks, c.base.target, c.base.sizes)
                for c in changes if c.base is not None and c.local is not None]

    def local_changes(self, hash_files: bool = True, started: PendingScan | None = None) -> list[LocalChange]:
        """Every local change since the last sync, files hashed where their stat moved."""
        sure, maybe = self._candidates(started)
        same = []
        for change in maybe:
            try:
                change.digests, change.size = self.chunker.digests(self.root / change.path)
            except OSError:  # gone, or no longer a regular file: the next scan tells what it is
                continue
            if self._unchanged(change):
                same.append(change)
            else:
                sure.append(change)
        self._refresh(same)
        return sorted(sure, key=lambda c: c.path)

    def status(self, remote: bool = True) -> Status:
        """Local changes, and how many remote changes wait to be pulled."""
        if remote:
            pending_commit.finish(self)
        result = Status(cursor=self.index.cursor)
        for change in self.local_changes(started=prescan.take(self.root)):
            getattr(result, change.status).append(change.path)
        result.skipped = list(self.workspace.skipped)
        result.ignored = list(self.workspace.ignored)
        result.ignore_rules = self.workspace.ignore_rules()
        result.ignore_synced = bool(result.ignore_rules) and bool(self.index.get_many([IGNORE_FILE]))
        if remote:
            pending = self.api.pending(self.box_id, result.cursor, self.config.device_id)
            result.remote_waiting, result.head = pending["waiting"], pending["head"]
        return result

    # --- push -------------------------------------------------------------------------------

    def push(self, message: str = "", dry_run: bool = False, hold: set[str] | None = None,
             settle: float = 0.0) -> PushResult:
        """Upload the blocks the server lacks and commit every local change in one atomic commit.

        Paths in `hold` (files still being written, as watch sees them) wait for a later push, and so
        do files modified less than `settle` seconds ago (a writer whose events have not arrived yet).
        """
        if not dry_run:
            pending_commit.finish(self)  # a push that died after its commit landed: record it, or the server refuses
        sure, maybe = self._candidates(prescan.take(self.root))
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
            changes = self.local_changes()
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

        side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index")
        written: Future[list[str]] | None = None
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
                # The new index entries are written, in a transaction left open, while the last uploads
                # finish and the server stores the commit (100,000 files: 1 s that the machine, waiting
                # on both, has to spare); they are committed once it answers, with its seq as revision.
                written = side.submit(self._write_entries, changes, same)
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
            put_paths = written.result() if written is not None else []
        except BaseException:
            uploader.pool.shutdown(wait=False, cancel_futures=True)
            stager.abandon()
            if written is not None:
                with contextlib.suppress(BaseException):
                    written.result()  # the helper is done with the index before it is rolled back
            self.index.rollback()
            raise
        finally:
            side.shutdown(wait=True)
        if not changes or answer is None:
            if same:
                self.index.commit()  # only the new stats of files found unchanged
            return result
        result.seq = int(answer["seq"])
        self._record_push(result.changes, put_paths, result.seq, int(answer["previous_head"]))
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

    def repair_blocks(self) -> RepairResult:
        """Offer the server every block of the indexed files again (see boxctl.repair)."""
        return repair_blocks(self.root, self.index, self.chunker, self.api, self.uploads)

    def _record_push(self, changes: list[LocalChange], put_paths: list[str], seq: int, previous_head: int) -> None:
        """Commit the index transaction that _write_entries opened: the puts (`put_paths`) get revision `seq`."""
        try:
            self.index.set_rev(put_paths, seq)
            self.index.delete([c.path for c in changes if c.op == "delete"])
            # Nothing else landed between our cursor and this commit: we are up to date with it.
            advanced = previous_head == self.index.cursor
            if advanced:
                self.index.set_cursor(seq)
        except BaseException:
            self.index.rollback()
            raise
        self.index.commit()
        if advanced:
            self._ack(seq)

    def _ack(self, cursor: int) -> None:
        """Tell the server how far this device has applied the journal (shown by 'boxctl devices')."""
        with contextlib.suppress(BoxError):
            self.api.ack(self.box_id, self.config.device_id, cursor)

    # --- pull -------------------------------------------------------------------------------

    def remote_changes(self, cursor: int) -> tuple[dict[str, dict[str, Any]], int]:
        """The latest journal entry of each path changed after `cursor`, and the new cursor."""
        latest: dict[str, dict[str, Any]] = {}
        stop_at: int | None = None  # the head when the pull began: later commits wait for the next pull
        entries = 0
        for _ in range(MAX_FEED_PAGES):
            page = self.api.changes(self.box_id, cursor)
            entries += len(page["entries"])
            if entries > MAX_FEED_ENTRIES:
                raise ServerRefused(f"the server's change feed goes on past {MAX_FEED_ENTRIES:,} entries; "
                                    "stopped (is it a Box server?)")
            for entry in page["entries"]:
                latest[entry["path"]] = entry
            new_cursor = int(page["cursor"])
            if page["more"] and new_cursor <= cursor:
                raise ServerRefused("the server's change feed does not move on; stopped (is it a Box server?)")
            cursor = new_cursor
            stop_at = int(page.get("head", cursor)) if stop_at is None else stop_at
            if not page["more"] or cursor >= stop_at:
                return latest, cursor
        raise ServerRefused(f"the server's change feed goes on past {MAX_FEED_PAGES:,} pages; "
                            "stopped (is it a Box server?)")

    def pull(self, paths: list[str] | None = None, cwd: Path | None = None) -> PullResult:
        """Apply remote changes; local edits are never overwritten (conflicted copies keep both).

        With `paths`, fetch only those files or folders: in a selective folder they join the
        selection (sync on demand); in a full folder only they are updated, and the cursor stays.
        """
        pending_commit.finish(self)  # our own dead push's commit is ours, not a remote change to reconcile
        wanted = [self.box_path(p, cwd) for p in paths or []]
        fetched: list[PullResult] = []
        if wanted and self.config.only:
            added = [p for p in wanted if not self.selected(p)]
            if added:
                self.config.only = sorted(set(self.config.only) | set(added))
                self.config.save(self.root)
                for prefix in added:
                    tree = self.tree(prefix)
                    fetched.append(self._apply({e["path"]: e for e in tree["entries"]}, self.index.cursor, False))
            wanted = []
        latest, cursor = self.remote_changes(self.index.cursor)
        if wanted:
            latest = {p: e for p, e in latest.items() if any(is_under(p, w) or p in parent_paths(w) for w in wanted)}
        else:
            latest = {p: e for p, e in latest.items() if self.selected(p)}
        result = self._apply(latest, cursor, advance=not wanted)
        for earlier in fetched:
            result.written[:0] = earlier.written
            result.conflicts[:0] = earlier.conflicts
            result.kept[:0] = earlier.kept
            result.refused[:0] = earlier.refused
        return result

    def adopt(self, remote: dict[str, dict[str, Any]], cursor: int) -> PullResult:
        """Reconcile server entries (path -> entry, e.g. a head tree) with the disk and the index by the pull's
        own rules, then set the cursor to `cursor`: how `boxctl check --repair` rebuilds an index."""
        return self._apply(remote, cursor, advance=True)

    def _apply(self, latest: dict[str, dict[str, Any]], cursor: int, advance: bool) -> PullResult:
        """Reconcile the latest remote entry of each path with the disk and the index."""
        self._hashes.clear()  # a stat can repeat across rounds (racy mtimes): hash afresh each pull
        result = PullResult(cursor=cursor if advance else self.index.cursor)
        base = self.index.entries()
        writes: list[dict[str, Any]] = []
        index_puts: list[IndexEntry] = []
        index_dels: list[str] = []
        deletes: list[dict[str, Any]] = []
        for path in sorted(latest):
            remote = latest[path]
            old = base.get(path)
            if old is not None and old.rev == remote["seq"]:
                continue  # our own commit, or one we already applied
            try:
                self.workspace.safe_path(path, look_at_parents=False)
            except UnsafePath as exc:
                result.refused.append((path, exc.message))
                continue
            # Under a file or link of ours, the path does not exist here (kinds.make_room clears the way).
            local = None if self.workspace.blocking_parent(path) else self.workspace.stat(path)
            changed = self._locally_changed(local, old)
            if remote["op"] == "delete":
                if local is None:
                    index_dels.append(path)
                elif not changed:
                    deletes.append(remote | {"local_kind": local.kind, "expect": local})
                else:
                    index_dels.append(path)  # keep the local edit: it becomes a new file to push
                    result.kept.append(path)
                continue
            same = local is not None and self.same_content(local, remote)
            if local is not None and changed and not same:
                if local.kind == "dir" and remote["kind"] == "dir":
                    index_puts.append(self._entry_from_remote(remote, local))
                    continue
                copy = move_aside(self.root, path, self.config.device_name)
                result.conflicts.append({"path": path, "copy": copy})
                local = None
            elif local is not None and same:
                index_puts.append(self._entry_from_remote(remote, local))
                continue
            writes.append(remote | {"expect": local})
        # Paths that change kind: what is in the way goes first (see boxctl/kinds.py), other deletes last.
        kind_folders = kinds.folders_of(writes)
        first, deletes = kinds.split_deletes(deletes, writes, kind_folders)
        with SafeRoot(self.root) as folders:
            self._apply_deletes(folders, first, result, index_dels)
        kinds.make_room(self.workspace, writes, kind_folders, base, index_dels, result.kept,
                        lambda path: self._move_aside(path, result))
        with SafeRoot(self.root) as folders:  # every write below goes through its open folders (rule 6)
            self._apply_writes(folders, writes, result, index_puts)
            self._apply_deletes(folders, deletes, result, index_dels)
        if (result.damaged or result.held) and advance:
            # Not past a file left unwritten: the next pull asks for it again (pages hold whole commits,
            # and what came before it is applied; what is applied after it is skipped by its revision).
            first = min([d["seq"] for d in result.damaged] + result.held)
            cursor = result.cursor = max(self.index.cursor, first - 1)
        with self.index.transaction() as conn:
            self.index.put(index_puts, conn)
            self.index.delete(index_dels, conn)
            if advance:
                self.index.set_cursor(cursor, conn)
        result.bytes_received = self.api.received_bytes
        if advance:
            self._ack(cursor)
        return result

    def _move_aside(self, path: str, result: PullResult) -> None:
        """Keep a local path that loses its place to a remote one of another kind, as a conflicted copy."""
        copy = move_aside(self.root, path, self.config.device_name)  # never onto an existing name
        result.conflicts.append({"path": path, "copy": copy})

    def _locally_changed(self, local: LocalEntry | None, old: IndexEntry | None) -> bool:
        if local is None or old is None:
            return (local is None) != (old is None)
        if local.kind != old.kind:
            return True
        if local.kind == "link":
            return local.target != old.target
        if local.kind == "dir":
            return False
        if (old.size, old.mtime_ns, old.inode, old.mode) == (local.size, local.mtime_ns, local.inode, local.mode):
            return False
        return self._file_hash(local) != old.content_hash or local.mode != old.mode

    def same_content(self, local: LocalEntry, remote: dict[str, Any]) -> bool:
        """True if the local path holds exactly the remote entry (kind, target, or mode and content)."""
        if local.kind != remote["kind"]:
            return False
        if local.kind == "dir":
            return True
        if local.kind == "link":
            return local.target == remote["target"]
        if local.size != remote["size"] or local.mode != remote["mode"]:
            return False
        return self._file_hash(local) == remote["content_hash"]

    def _file_hash(self, local: LocalEntry) -> str:
        """Content hash of a local file, computed once per state of the file during a pull."""
        key = (local.path, local.size, local.mtime_ns, local.inode)
        cached = self._hashes.get(key)
        if cached is None:
            digests, _ = self.chunker.digests(self.root / local.path)
            cached = self._hashes[key] = content_hash("file", digests, None)
        return cached

    def _entry_from_remote(self, remote: dict[str, Any], local: LocalEntry, sizes: bytes = b"") -> IndexEntry:
        return IndexEntry(remote["path"], remote["kind"], local.size, local.mtime_ns, local.inode, local.mode,
                          int(remote["seq"]), remote["content_hash"],
                          b"".join(bytes.fromhex(h) for h in remote["blocks"]), remote["target"], sizes)

    def _apply_writes(self, folders: SafeRoot, writes: list[dict[str, Any]], result: PullResult,
                      index_puts: list[IndexEntry]) -> None:
        """Create folders and links, then stream every file's blocks into place (temp, fsync, rename)."""
        placed: set[str] = set()
        links = {r["path"]: r["target"] for r in writes if r["kind"] == "link"}
        self._check_free_space(writes)
        for remote in sorted(writes, key=lambda r: (r["kind"] != "dir", r["path"])):
            try:
                if remote["kind"] == "link":  # checked before anything is created for it
                    check_link_target(remote["path"], remote["target"], self.root, links)
                if remote["kind"] == "dir":
                    folders.folder(remote["path"], create=True)
                else:
                    folders.parent(remote["path"], create=True)
                placed.add(remote["path"])
            except UnsafePath as exc:
                links.pop(remote["path"], None)
                self._refuse(remote, result, exc)  # the rest of the pull goes on
                continue
            if remote["kind"] == "dir":
                self._done(folders, remote, result, index_puts)
        writes = [r for r in writes if r["path"] in placed]
        # Every folder that gets a temp is noted first, so that a pull cut off at any point (SIGKILL, power
        # loss) leaves no temp the next pull does not know of; this one removes what earlier ones left.
        with pull_temps.PullTemps(self.root) as temps:
            leftovers = temps.leftovers()
            temps.note({r["path"].rpartition("/")[0] for r in writes if r["kind"] != "dir"})
            self._write_files(folders, writes, leftovers, result, index_puts)
            temps.clear()  # on an error, the journal stays: the next pull resumes and removes what is left

    @staticmethod
    def _refuse(remote: dict[str, Any], result: PullResult, exc: UnsafePath, held: bool = False) -> None:
        """Note a path left alone; `held` (a folder swapped while the pull ran) makes the next pull ask again."""
        result.refused.append((remote["path"], exc.message))
        if held:
            result.held.append(int(remote["seq"]))

    def _write_files(self, folders: SafeRoot, writes: list[dict[str, Any]], leftovers: list[Path],
                     result: PullResult, index_puts: list[IndexEntry]) -> None:
        """Links, then files: each written to a temp file and renamed into place (see `_place`)."""
        for remote in writes:
            if remote["kind"] == "link":
                try:
                    fd, name = folders.parent(remote["path"])
                    temp = link_temp(name, remote["target"], dir_fd=fd)
                except (UnsafePath, FileNotFoundError) as exc:
                    self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
                    continue
                self._place(folders, remote, temp.name, result, index_puts)
        files = [r for r in writes if r["kind"] == "file"]
        total = sum(r["size"] for r in files)
        done = 0
        source = LocalBlocks(self.root, self.index.entries(), files)
        # A big file is written under a name made of its content hash: a pull cut off leaves it behind, and
        # the next one reads its verified blocks instead of fetching them again.
        partials = {r["path"]: (self.root / r["path"]).parent / f"{PARTIAL_PREFIX}{r['content_hash'][:24]}"
                    for r in files if r["size"] > SMALL_FILE}
        previous = pull_temps.resume(list(partials.values()), leftovers,
                                     lambda prev: source.add_partial(prev, self.chunker))
        stream = download_blocks(self.api, _block_sizes(files), self.threads, local=source.read)
        # Small files are written in batches: temps first, one syncfs for the batch, then the renames,
        # so 10,000 small files cost a few flushes instead of 10,000 fsyncs. Big files fsync alone.
        batch: list[tuple[dict[str, Any], str, list[int]]] = []
        batch_bytes = 0
        try:
            for remote in files:
                chunks = _take(stream, len(remote["blocks"]), remote["path"])
                sizes: list[int] = []
                small = remote["size"] <= SMALL_FILE
                partial = partials.get(remote["path"])
                try:
                    fd, name = folders.parent(remote["path"])
                    temp = write_temp(name, _counted(chunks, sizes), remote["mode"], remote["mtime_ns"],
                                      partial.name if partial else None, sync=not small, dir_fd=fd).name
                except IntegrityError as exc:  # this file only: every other file of the pull is still written
                    result.damaged.append({"path": remote["path"], "seq": remote["seq"],
                                           "blocks": exc.details.get("blocks", []),
                                           "reason": exc.details.get("reason", exc.message)})
                    continue
                except (UnsafePath, FileNotFoundError) as exc:  # its folder swapped or removed meanwhile
                    for _ in chunks:
                        pass  # the stream stays in step with the files
                    self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
                    continue
                batch.append((remote, temp, sizes))
                batch_bytes += remote["size"]
                if not small or len(batch) >= 2000 or batch_bytes >= 64 << 20:
                    done += self._finish_batch(folders, batch, result, index_puts, sync=any(
                        r["size"] <= SMALL_FILE for r, _, _ in batch))
                    batch, batch_bytes = [], 0
                    self.progress("pull", done, total)
            if batch:
                done += self._finish_batch(folders, batch, result, index_puts, sync=True)
                batch = []
                self.progress("pull", done, total)
        except BaseException:
            # The small files' temps are of no use to a later pull (a big file's partial is: it stays).
            for remote, temp, _ in batch:
                if remote["path"] not in partials:
                    with contextlib.suppress(OSError, UnsafePath):
                        os.unlink(temp, dir_fd=folders.parent(remote["path"])[0])
            raise
        for prev in previous:  # every block of an earlier attempt is in place now
            with contextlib.suppress(OSError):
                prev.unlink()
        result.blocks_reused = source.reused

    def _check_free_space(self, writes: list[dict[str, Any]]) -> None:
        """Refuse a pull whose files would not fit on this disk, before writing any of them.

        Dedup lets a few bytes on the server stand for a huge file (one block repeated), so what counts is
        the logical size the pull would write, with a margin left for the rest of the system.
        """
        needed = sum(int(r["size"]) for r in writes if r["kind"] == "file")
        if not needed:
            return
        free = shutil.disk_usage(self.root).free
        if needed + FREE_SPACE_MARGIN > free:
            raise BoxError(f"not enough free space in {self.root}: this pull writes {format_size(needed)} and "
                           f"{format_size(free)} is free; free some space, or pull less ('boxctl pull PATH')")

    def _finish_batch(self, folders: SafeRoot, batch: list[tuple[dict[str, Any], str, list[int]]],
                      result: PullResult, index_puts: list[IndexEntry], sync: bool) -> int:
        """Flush the batch's temp files, then rename each into place (see `_place`); bytes done."""
        if sync:
            sync_filesystem(self.root, folders.folder(""))
        done = 0
        for remote, temp, sizes in batch:
            done += self._place(folders, remote, temp, result, index_puts, pack_sizes(sizes))
        if sync:
            sync_filesystem(self.root, folders.folder(""))  # the renames too, before the index says they happened
        return done

    def _place(self, folders: SafeRoot, remote: dict[str, Any], temp: str, result: PullResult,
               index_puts: list[IndexEntry], sizes: bytes = b"") -> int:
        """Rename `temp` (a name in the folder of the remote version's path) onto its path; its bytes, or 0
        if it was not placed.

        The path is checked right before the rename. If it changed since the pull looked at it (an edit
        saved while the pull ran), the local version is moved aside as a conflicted copy, a new file for
        the next push, and the remote version takes the name (rule 3); if it already holds the remote
        version, it stays. Either way the index gets the remote revision, so the next push goes through.
        If its folder was swapped (for a link, or moved away) meanwhile, nothing is placed: it is refused.
        """
        folder = remote["path"].rpartition("/")[0]
        fd: int | None = None
        try:
            fd, name = folders.parent(remote["path"])
            seen = folders.entry(f"{folder}/{temp}" if folder else temp)  # a rename keeps the stat
            for _ in range(PLACE_TRIES):
                folders.verify(folder)  # still at its path: what lands in it lands inside the synced folder
                if self._still_as_expected(folders, remote):
                    try:
                        if remote.get("expect") is None:
                            rename_noreplace(temp, name, dir_fd=fd)  # a file saved since is never replaced
                        else:
                            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
                    except FileExistsError:
                        continue  # saved right after the check: look again
                    # The stat of the temp, not of the path now: a save right after the rename is an edit to push.
                    self._done(folders, remote, result, index_puts, sizes, seen)
                    return int(remote["size"])
                now = folders.entry(remote["path"])
                if now is not None and self.same_content(now, remote):
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=fd)
                    index_puts.append(self._entry_from_remote(remote, now))
                    return 0
                if now is not None:
                    with contextlib.suppress(FileNotFoundError):
                        copy = move_aside(folders, remote["path"], self.config.device_name)
                        result.conflicts.append({"path": remote["path"], "copy": copy})
                remote["expect"] = None  # moved aside, or deleted meanwhile: the remote version comes (back)
        except (UnsafePath, FileNotFoundError) as exc:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=fd)  # ours, in the folder it was made in, wherever that is now
            self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
            return 0
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=fd)
        result.kept.append(remote["path"])
        return 0

    def _still_as_expected(self, folders: SafeRoot, remote: dict[str, Any]) -> bool:
        """Right before replacing or deleting a path, check it is still as we saw it (a local edit wins the race)."""
        expected: LocalEntry | None = remote.get("expect")
        now = folders.entry(remote["path"])
        if expected is None:
            return now is None or (now.kind == "dir" and remote["kind"] == "dir")
        return now is not None and (now.kind, now.size, now.mtime_ns, now.inode, now.mode) == (
            expected.kind, expected.size, expected.mtime_ns, expected.inode, expected.mode)

    def _done(self, folders: SafeRoot, remote: dict[str, Any], result: PullResult, index_puts: list[IndexEntry],
              sizes: bytes = b"", local: LocalEntry | None = None) -> None:
        local = local or folders.entry(remote["path"])
        if local is not None:
            index_puts.append(self._entry_from_remote(remote, local, sizes))
            result.written.append(remote["path"])

    def _apply_deletes(self, folders: SafeRoot, deletes: list[dict[str, Any]], result: PullResult,
                       index_dels: list[str]) -> None:
        """Remove what the remote side deleted, each path checked right before: one changed while the pull
        ran is kept, to be pushed as a new file; one whose folder was swapped meanwhile is refused."""
        for remote in sorted(deletes, key=lambda r: r["path"], reverse=True):
            path = remote["path"]
            try:
                fd, name = folders.parent(path)
                folders.verify(path.rpartition("/")[0])
                if self._still_as_expected(folders, remote) and remove_path(name, remote["local_kind"], fd):
                    folders.forget(path)
                    result.deleted.append(path)
                elif folders.entry(path) is None:
                    result.deleted.append(path)  # deleted here as well meanwhile
                else:
                    result.kept.append(path)  # edited since, or a folder that still holds unsynced files
            except FileNotFoundError:
                result.deleted.append(path)  # its folder is gone too
            except UnsafePath as exc:
                self._refuse(remote, result, exc, held=True)  # the index keeps it: the next pull deletes it
                continue
            index_dels.append(path)
        if deletes:
            sync_filesystem(self.root, folders.folder(""))  # else a power cut could bring back a file the index forgot

    # --- history ----------------------------------------------------------------------------

    def log(self, path: str | None, limit: int, cwd: Path | None = None) -> LogAnswer:
        """Commits newest first, or the revisions of one path."""
        if path:
            path = self.box_path(path, cwd)
        return self.api.log(self.box_id, path or None, limit)

    def box_path(self, path: str, cwd: Path | None = None) -> str:
        """A user-given path (relative to `cwd`, default the current folder) as a box path ('' for the root)."""
        given = Path(path)
        full = given if given.is_absolute() else (cwd or Path.cwd()) / given
        try:
            rel = os.path.relpath(os.path.abspath(full), self.root)
        except ValueError:
            raise UsageError(f"{path} is not inside {self.root}") from None
        if rel == "." or rel == "":
            return ""
        if rel.startswith(".."):
            raise UsageError(f"{path} is not inside the synced folder {self.root}")
        try:
            return normalize_prefix(rel.replace(os.sep, "/"))
        except InvalidPath as exc:
            raise UsageError(str(exc)) from None

    def tree(self, prefix: str, at: int | None = None, when: float | None = None) -> TreeAnswer:
        """The box (or folder `prefix`) as of commit `at`, time `when`, or now."""
        return self.api.tree(self.box_id, prefix, at, when)

    def restore(self, path: str, at: int | None, when: float | None, to: Path | None,
                cwd: Path | None = None) -> dict[str, Any]:
        """Bring `path` back as it was at commit `at` (or time `when`): as a new commit, or into `to`."""
        prefix = self.box_path(path, cwd)
        then = self.tree(prefix, at, when)
        wanted = {e["path"]: e for e in then["entries"]}
        if not wanted:
            where = f"commit {then['seq']}"
            raise NotFound(f"{prefix or 'the box'} did not exist at {where}; see 'boxctl log {path}'")
        if to is not None:
            written, refused = self._export(wanted, prefix, to)
            return {"restored": prefix or ".", "seq": then["seq"], "to": str(to), "files": written,
                    "refused": [{"path": p, "reason": r} for p, r in refused]}
        now = {e["path"]: e for e in self.tree(prefix)["entries"]}
        changes: list[ChangeIn] = []
        for p, e in wanted.items():
            cur = now.get(p)
            if cur is not None and (cur["kind"], cur["content_hash"], cur["mode"]) == (
                    e["kind"], e["content_hash"], e["mode"]):
                continue
            changes.append({"path": p, "op": "put", "kind": e["kind"], "parent_rev": cur["seq"] if cur else 0,
                            "size": e["size"], "mtime_ns": e["mtime_ns"], "mode": e["mode"], "blocks": e["blocks"],
                            "target": e["target"]})
        for p, cur in now.items():
            if p not in wanted:
                changes.append({"path": p, "op": "delete", "kind": cur["kind"], "parent_rev": cur["seq"]})
        seq = None
        if changes:
            label = prefix or "the box"
            body: CommitIn = {"message": f"restore {label} to commit {then['seq']}",
                              "device": self.config.device_id, "key": secrets.token_urlsafe(16), "changes": changes}
            seq = self.api.commit(self.box_id, body)["seq"]
        pulled = self.pull()
        return {"restored": prefix or ".", "from_seq": then["seq"], "seq": seq, "changes": len(changes),
                "pull": pulled.as_json()}

    def _export(self, wanted: dict[str, dict[str, Any]], prefix: str, to: Path) -> tuple[int, list[tuple[str, str]]]:
        """Write a past version into `to` (a folder, or a file name when restoring one file).

        Paths and link targets come from the server: each goes through the checks a pull makes (rule 6),
        so nothing lands outside `to` or through a link; what is refused is returned with the reason.
        """
        single = len(wanted) == 1 and prefix in wanted and wanted[prefix]["kind"] == "file"
        refused: list[tuple[str, str]] = []
        if single and not to.is_dir():  # a file name the user gave: written by that name
            entry = wanted[prefix]
            stream = download_blocks(self.api, _block_sizes([entry]), self.threads)
            to.parent.mkdir(parents=True, exist_ok=True)
            fsync_write(to.parent, to, _take(stream, len(entry["blocks"]), prefix), entry["mode"], entry["mtime_ns"])
            return 1, refused
        base = prefix.rsplit("/", 1)[-1] if prefix else ""
        to.mkdir(parents=True, exist_ok=True)
        dest_root = Workspace(to)
        targets: dict[str, str] = {}  # box path -> path inside `to`
        rels = {p: (f"{base}/{p[len(prefix) + 1:]}" if prefix and p != prefix else (base if prefix else p))
                for p in wanted}
        links = {rels[p]: e["target"] for p, e in wanted.items() if e["kind"] == "link"}
        for p in sorted(wanted):
            rel = rels[p]
            try:
                if not is_under(p, prefix) or p != normalize_path(p):
                    raise UnsafePath(f"refusing path from the server: {p!r} is not inside {prefix or 'the box'}")
                if wanted[p]["kind"] == "link":
                    check_link_target(rel, wanted[p]["target"], to, links)
                dest_root.safe_path(rel)  # the name checks; the folders are made below, through descriptors
                targets[p] = rel
            except (UnsafePath, InvalidPath) as exc:
                refused.append((p, str(exc)))
        written = 0
        # Every write goes through folders of `to` opened without following links (see boxctl.dirfd).
        with SafeRoot(to) as folders:
            for p, rel in sorted(targets.items()):
                try:
                    if wanted[p]["kind"] == "dir":
                        folders.folder(rel, create=True)
                    else:
                        folders.parent(rel, create=True)
                except UnsafePath as exc:
                    refused.append((p, exc.message))
                    del targets[p]
            files = [e for p, e in sorted(wanted.items()) if e["kind"] == "file" and p in targets]
            stream = download_blocks(self.api, _block_sizes(files), self.threads)
            for e in files:
                rel = targets[e["path"]]
                chunks = _take(stream, len(e["blocks"]), e["path"])
                try:
                    fd, name = folders.parent(rel)
                    folders.verify(rel.rpartition("/")[0])
                except (UnsafePath, FileNotFoundError) as exc:
                    for _ in chunks:
                        pass  # the stream stays in step with the files
                    refused.append((e["path"], _swapped(rel, exc).message))
                    continue
                fsync_write(to, name, chunks, e["mode"], e["mtime_ns"], dir_fd=fd)
                written += 1
            for p, e in wanted.items():
                if e["kind"] == "link" and p in targets:
                    try:
                        fd, name = folders.parent(targets[p])
                    except (UnsafePath, FileNotFoundError) as exc:
                        refused.append((p, _swapped(targets[p], exc).message))
                        continue
                    make_link(name, e["target"], dir_fd=fd)
        return written, refused


def _swapped(path: str, exc: OSError | UnsafePath) -> UnsafePath:
    """The refusal of `path` whose folder was swapped for a link (`exc` is UnsafePath) or removed."""
    if isinstance(exc, UnsafePath):
        return exc
    return UnsafePath(f"refusing to write {path!r}: its folder was removed during the pull")


def _block_sizes(files: list[dict[str, Any]]) -> Iterator[tuple[str, int]]:
    for remote in files:
        blocks = remote["blocks"]
        each = remote["size"] // max(1, len(blocks))
        for sha in blocks:
            yield sha, each


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


def _counted(chunks: Iterator[bytes], sizes: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        sizes.append(len(chunk))
        yield chunk


class LocalBlocks:
    """Blocks this device already holds (in synced files, or in a pull that was cut off), to copy not fetch."""

    def __init__(self, root: Path, entries: dict[str, IndexEntry], files: list[dict[str, Any]]) -> None:
        wanted = {bytes.fromhex(h) for r in files for h in r["blocks"]}
        self.where: dict[bytes, list[tuple[Path, int, int, tuple[int, int, int] | None]]] = {}
        self.reused = 0
        self._lock = threading.Lock()
        for e in entries.values():
            if e.kind != "file":
                continue
            # A racily recorded entry (mtime 0) has no stat to compare: its blocks are still offered,
            # since every block read here is checked against its SHA-256 before use.
            stamp = (e.size, e.mtime_ns, e.inode) if e.mtime_ns else None
            for digest, offset, length in e.block_spans():
                if digest in wanted:
                    self.where.setdefault(digest, []).append((root / e.path, offset, length, stamp))

    def add_partial(self, path: Path, chunker: Chunker) -> None:
        """Offer the blocks of a partly written temp file (its last block may be cut short: it won't match)."""
        for block in chunker.blocks(path):
            self.where.setdefault(block.digest, []).append((path, block.offset, len(block.data), None))

    def read(self, sha: str) -> bytes | None:
        """The block's bytes from a local file that still holds it, or None (the caller verifies the hash)."""
        for path, offset, length, stamp in self.where.get(bytes.fromhex(sha), ()):
            try:
                if stamp is not None:
                    st = os.lstat(path)
                    if (st.st_size, st.st_mtime_ns, st.st_ino) != stamp:
                        continue  # changed since it was synced: its blocks may differ
                with open(path, "rb") as f:
                    data = os.pread(f.fileno(), length, offset)
            except OSError:
                continue
            if len(data) == length and hashlib.sha256(data).hexdigest() == sha:
                with self._lock:
                    self.reused += 1
                return data
        return None


def _take(stream: Iterator[bytes | DamagedBlock], count: int, path: str) -> Iterator[bytes]:
    """The next `count` blocks of `stream`, those of file `path`. A damaged one stops the file: the rest of
    its blocks are still taken (the stream stays in step), then IntegrityError names the file."""
    damaged = None
    for _ in range(count):
        chunk = next(stream)
        if isinstance(chunk, DamagedBlock):
            damaged = damaged or chunk
        elif damaged is None:
            yield chunk
    if damaged is not None:
        raise damaged.error(path)


def _default_message(changes: list[LocalChange]) -> str:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.status] = counts.get(c.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


__all__ = ["Engine", "LocalChange", "PullResult", "PushResult", "Status", "conflict_name", "is_under"]
