"""Unpull: leave a file or folder out of this folder's selective sync again (the reverse of `pull PATH`).

The selection is the list of box paths kept here (`only` in `.box/config`; empty means everything).
Leaving out PATH removes it from that list; where PATH lies inside a selected folder (or the folder
syncs everything), that folder is replaced by what it holds beside PATH, level by level, as the server
and the index know it now. The selection is saved first, then the local copy goes, each synced file
checked against the index right before it is removed: a crash in between leaves files that are no
longer synced, never files that look deleted to the next push.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from box_common.paths import is_under, parent_paths
from boxctl.errors import UsageError
from boxctl.local.dirfd import SafeRoot
from boxctl.local.workspace import UnsafePath, remove_path

if TYPE_CHECKING:
    from boxctl.engine.core import Engine

SHOWN = 3  # unsynced paths named in a refusal


class UnpullJson(TypedDict):
    """`boxctl unpull --json`."""

    path: str
    removed: int
    kept: list[str]
    only: list[str]


@dataclass
class UnpullResult:
    """What an unpull did: the selection now, and what stayed on disk."""

    path: str
    only: list[str]
    removed: int = 0
    kept: list[str] = field(default_factory=list)  # paths left in place (never synced, or changed just now)

    def as_json(self) -> UnpullJson:
        return {"path": self.path, "removed": self.removed, "kept": self.kept, "only": self.only}


def unpull(engine: Engine, prefix: str, keep: bool) -> UnpullResult:
    """Stop syncing `prefix` here and, unless `keep`, remove its local copy (refused if any of it is unsynced:
    with `keep` nothing is lost, so nothing is refused)."""
    if not prefix:
        raise UsageError("unpull takes a file or folder inside the synced folder, not the folder itself")
    only = list(engine.config.only)
    if not engine.selected(prefix) and not any(is_under(o, prefix) for o in only):
        raise UsageError(f"{prefix} is not synced here (see 'boxctl status'); nothing was changed")
    unsynced = [] if keep else [c.path for c in engine.local_changes() if is_under(c.path, prefix)]
    if unsynced:
        names = ", ".join(unsynced[:SHOWN]) + (", ..." if len(unsynced) > SHOWN else "")
        raise UsageError(f"{prefix} holds {len(unsynced)} change(s) not pushed yet ({names}): run 'boxctl push' "
                         f"first, or 'boxctl unpull {prefix} --keep' to stop syncing it and keep the local copy; "
                         "nothing was changed")
    selection = _without(engine, only, prefix)
    if not selection:
        raise UsageError(f"{prefix} is all this folder syncs: leaving it out would leave nothing; nothing was changed")
    engine.config.only = selection
    engine.config.save(engine.root)
    result = UnpullResult(prefix, selection)
    if not keep:
        _remove(engine, prefix, result)
    return result


def _without(engine: Engine, only: list[str], prefix: str) -> list[str]:
    """The selection `only` ([] for everything) with `prefix` left out."""
    holder = next((o for o in [*only, ""] if (o or not only) and is_under(prefix, o) and o != prefix), None)
    kept = [o for o in only if not is_under(o, prefix) and o != holder]
    if holder is None:
        return sorted(kept)
    # Everything the holding folder has beside `prefix`, level by level down to it (the server's head and
    # this folder's index: a folder made here and not pushed yet is in neither, and joins again when pushed).
    known = {e["path"] for e in engine.tree(holder)["entries"]} | set(engine.index.stats())
    chain = {*parent_paths(prefix), prefix}
    for path in known:
        if not is_under(path, holder) or path == holder or path in chain or is_under(path, prefix):
            continue
        parent = path.rpartition("/")[0]
        if parent == holder or parent in chain:
            kept.append(path)
    return sorted(set(kept))


def _remove(engine: Engine, prefix: str, result: UnpullResult) -> None:
    """Remove the synced paths under `prefix` (deepest first), each only while it is as the index recorded it;
    their index entries go with them. What the index does not know (ignored files) stays."""
    entries = {p: e for p, e in engine.index.entries().items() if is_under(p, prefix)}
    removed: list[str] = []
    with SafeRoot(engine.root) as folders:
        for path in sorted(entries, reverse=True):
            e = entries[path]
            try:
                now = folders.entry(path)
                if now is None:
                    removed.append(path)
                    continue
                if e.kind == "file" and (now.kind, now.size, now.mtime_ns) != ("file", e.size, e.mtime_ns) \
                        and e.mtime_ns != 0:
                    result.kept.append(path)  # saved again since the check above: not ours to remove
                    continue
                fd, name = folders.parent(path)
                if remove_path(name, e.kind, dir_fd=fd):
                    folders.forget(path)
                    removed.append(path)
                    result.removed += e.kind != "dir"
                else:
                    result.kept.append(path)  # a folder that still holds what was never synced
            except (UnsafePath, OSError) as exc:
                reason = exc.message if isinstance(exc, UnsafePath) else exc.strerror or str(exc)
                result.kept.append(f"{path} ({reason})")
    with engine.index.transaction() as conn:
        engine.index.delete(removed, conn)
