"""Local changes: what differs between the folder and the index (the last sync), found by one
comparison of stats per path and a hash only where a stat moved."""

from __future__ import annotations

from boxctl.chunking import content_hash
from boxctl.engine import pending as pending_commit
from boxctl.engine.base import EngineBase
from boxctl.engine.results import LocalChange, Status
from boxctl.local import temps as pull_temps
from boxctl.local.index import IndexEntry
from boxctl.local.workspace import IGNORE_FILE, LocalEntry


class Changes(EngineBase):
    """Finding local changes (status, and the first step of a push)."""

    def _candidates(self) -> tuple[list[LocalChange], list[LocalChange]]:
        """Paths that surely changed, and files whose stat changed and that must be hashed to tell."""
        base = self.index.stats()
        scan = self.workspace.scan_stats()
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

    def local_changes(self, hash_files: bool = True, refresh: bool = True) -> list[LocalChange]:
        """Every local change since the last sync, files hashed where their stat moved (and, if `refresh`,
        the new stats of those found unchanged recorded in the index; a dry run leaves the index alone)."""
        sure, maybe = self._candidates()
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
        if refresh:
            self._refresh(same)
        return sorted(sure, key=lambda c: c.path)

    def status(self, remote: bool = True) -> Status:
        """Local changes, and how many remote changes wait to be pulled."""
        if remote:
            pending_commit.finish(self)
        result = Status(cursor=self.index.cursor)
        for change in self.local_changes():
            getattr(result, change.status).append(change.path)
        result.skipped = list(self.workspace.skipped)
        result.ignored = list(self.workspace.ignored)
        result.ignore_rules = self.workspace.ignore_rules()
        result.ignore_synced = bool(result.ignore_rules) and bool(self.index.get_many([IGNORE_FILE]))
        if remote:
            # Counted from this folder's own cursor, less the commits this very folder made past it: a second
            # folder of the same device (two clones on one machine) sees what the first one pushed.
            pending = self.api.pending(self.box_id, result.cursor)
            own = sum(n for seq, n in self.index.own_commits().items() if seq > result.cursor)
            result.remote_waiting, result.head = max(0, pending["waiting"] - own), pending["head"]
        return result
