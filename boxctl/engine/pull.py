"""Pull: read the change feed after the cursor, and reconcile the latest entry of each path with the
disk and the index; a path changed on both sides keeps both versions (a conflicted copy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from box_common.paths import (
    is_under,
    parent_paths,
)
from boxctl.engine import kinds
from boxctl.engine import pending as pending_commit
from boxctl.engine.apply import Apply, _swapped
from boxctl.engine.conflicts import conflict_name, move_aside
from boxctl.engine.results import PullResult
from boxctl.errors import ServerRefused
from boxctl.local.dirfd import SafeRoot
from boxctl.local.index import IndexEntry
from boxctl.local.workspace import (
    LocalEntry,
    UnsafePath,
)

# What one pull accepts from the change feed, so a hostile server cannot keep it looping forever.
MAX_FEED_PAGES = 100_000
MAX_FEED_ENTRIES = 10_000_000  # entries read in one pull (each page is read and dropped: this bounds time)
# Paths one pull holds at once (the latest entry of each, about 1.3 KB of memory apiece, so ~1.3 GB):
# a hostile feed of new names could otherwise fill memory (docs/security.md: a box past it cannot be pulled).
MAX_FEED_PATHS = 1_000_000


class Pull(Apply):
    """Reconciling remote changes with local ones."""

    def remote_changes(self, cursor: int) -> tuple[dict[str, dict[str, Any]], int]:
        """The latest journal entry of each path changed after `cursor`, and the new cursor."""
        latest: dict[str, dict[str, Any]] = {}
        stop_at: int | None = None  # the head when the pull began: later commits wait for the next pull
        entries = 0
        for _ in range(MAX_FEED_PAGES):
            page = self.api.changes(self.box_id, cursor, folder=self.config.folder)
            entries += len(page["entries"])
            if entries > MAX_FEED_ENTRIES:
                raise ServerRefused(f"the server's change feed goes on past {MAX_FEED_ENTRIES:,} entries; "
                                    "stopped (is it a Box server?)")
            for entry in page["entries"]:
                latest[entry["path"]] = entry
            if len(latest) > MAX_FEED_PATHS:
                raise ServerRefused(f"the server's change feed names more than {MAX_FEED_PATHS:,} paths; "
                                    "stopped (is it a Box server?)")
            new_cursor = int(page["cursor"])
            if page["more"] and new_cursor <= cursor:
                raise ServerRefused("the server's change feed does not move on; stopped (is it a Box server?)")
            cursor = new_cursor
            stop_at = int(page.get("head", cursor)) if stop_at is None else stop_at
            if not page["more"] or cursor >= stop_at:
                return latest, cursor
        raise ServerRefused(f"the server's change feed goes on past {MAX_FEED_PAGES:,} pages; "
                            "stopped (is it a Box server?)")

    def pull(self, paths: list[str] | None = None, cwd: Path | None = None, dry_run: bool = False) -> PullResult:
        """Apply remote changes; local edits are never overwritten (conflicted copies keep both).

        With `paths`, fetch only those files or folders: in a selective folder they join the
        selection (sync on demand); in a full folder only they are updated, and the cursor stays.
        With `dry_run`, say what it would do and change nothing (folder, index, selection, server).
        """
        if not dry_run:
            pending_commit.finish(self)  # our own dead push's commit is ours, not a remote change to reconcile
        wanted = [self.box_path(p, cwd) for p in paths or []]
        fetched: list[PullResult] = []
        if wanted and self.config.only:
            added = [p for p in wanted if not self.selected(p)]
            if added:
                if not dry_run:
                    self.config.only = sorted(set(self.config.only) | set(added))
                    self.config.save(self.root)
                for prefix in added:
                    tree = self.tree(prefix)
                    fetched.append(self._apply({e["path"]: e for e in tree["entries"]}, self.index.cursor, False,
                                               dry_run))
            wanted = []
        latest, cursor = self.remote_changes(self.index.cursor)
        if wanted:
            latest = {p: e for p, e in latest.items() if any(is_under(p, w) or p in parent_paths(w) for w in wanted)}
        else:
            latest = {p: e for p, e in latest.items() if self.selected(p)}
        result = self._apply(latest, cursor, advance=not wanted, dry_run=dry_run)
        for earlier in fetched:
            result.written[:0] = earlier.written
            result.added[:0] = earlier.added
            result.conflicts[:0] = earlier.conflicts
            result.kept[:0] = earlier.kept
            result.refused[:0] = earlier.refused
        return result

    def adopt(self, remote: dict[str, dict[str, Any]], cursor: int) -> PullResult:
        """Reconcile server entries (path -> entry, e.g. a head tree) with the disk and the index by the pull's
        own rules, then set the cursor to `cursor`: how `boxctl check --repair` rebuilds an index."""
        return self._apply(remote, cursor, advance=True)

    def _apply(self, latest: dict[str, dict[str, Any]], cursor: int, advance: bool,
               dry_run: bool = False) -> PullResult:
        """Reconcile the latest remote entry of each path with the disk and the index (with `dry_run`, only
        decide: the result lists what would be written, deleted, kept and moved aside, and nothing is)."""
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
                try:
                    copy = (conflict_name(path, self.config.device_name) if dry_run
                            else move_aside(self.root, path, self.config.device_name))
                except (UnsafePath, OSError) as exc:  # cannot be moved aside here: left alone, asked again
                    self._refuse(remote, result, _swapped(path, exc), held=True)
                    continue
                result.conflicts.append({"path": path, "copy": copy})
                local = None
            elif local is not None and same:
                index_puts.append(self._entry_from_remote(remote, local))
                continue
            writes.append(remote | {"expect": local})
        if dry_run:
            return _preview(result, writes, deletes)
        # Paths that change kind: what is in the way goes first (see boxctl/engine/kinds.py), other deletes last.
        kind_folders = kinds.folders_of(writes)
        first, deletes = kinds.split_deletes(deletes, writes, kind_folders)
        with SafeRoot(self.root) as folders:
            self._apply_deletes(folders, first, result, index_dels)
        with SafeRoot(self.root) as folders:
            kinds.make_room(folders, writes, kind_folders, base, index_dels, result.kept,
                            lambda path: self._move_aside(path, result))
        with SafeRoot(self.root) as folders:  # every write below goes through its open folders (rule 6)
            self._apply_writes(folders, writes, result, index_puts)
            self._apply_deletes(folders, deletes, result, index_dels)
        if (result.damaged or result.held) and advance:
            # Not past a file left unwritten: the next pull asks for it again (pages hold whole commits,
            # and what came before it is applied; what is applied after it is skipped by its revision).
            first = min([d["seq"] for d in result.damaged] + result.held)
            cursor = result.cursor = max(self.index.cursor, first - 1)
        result.added = [path for path in result.written if path not in base]  # new to this folder
        with self.index.transaction() as conn:
            self.index.put(index_puts, conn)
            self.index.delete(index_dels, conn)
            if advance:
                self.index.set_cursor(cursor, conn)
        result.bytes_received = self.api.received_bytes
        if advance:
            self._ack(cursor)
        return result

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


def _preview(result: PullResult, writes: list[dict[str, Any]], deletes: list[dict[str, Any]]) -> PullResult:
    """A dry run's result: the paths a pull would write and delete, besides the conflicts and kept paths
    already decided. (Where a path changes kind, whether local files in the way move aside is decided as
    the pull runs: they are not listed here.)"""
    result.written = sorted(w["path"] for w in writes)
    result.deleted = sorted(d["path"] for d in deletes)
    return result
