"""A path is a file, a folder or a link, never a file that holds other paths.

A commit is refused (409 `not_a_folder`) if the tree it would leave, the head plus the commit's own
changes, has a file or link with something under it: a put inside a path that is (or becomes) a
file, or a file put over a folder whose contents the commit does not delete. A client applying such
a tree could never write it, so devices would never converge.

The check looks up only the folders that hold the commit's puts and their parents (a commit of
100,000 new files in 1,000 folders: 1,000 look-ups), and a put file's own name only where its folder
holds a non-empty folder already, so that a push of many new files pays next to nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Protocol

from server_min.errors import Conflict
from server_min.meta.base import CommitTx
from server_min.meta.records import NewEntry

SHOWN = 5  # children named per clashing path in the answer


class NotAFolder(Conflict):
    """A commit that would leave a file (or link) with paths under it."""

    code = "not_a_folder"


def folders_of(entries: Iterable[NewEntry]) -> dict[str, bool]:
    """The folders directly holding the puts among `entries` ('' for the top): folder -> it holds a put of
    a file or link (only those can clash with a folder of the same name)."""
    leaves: set[str] = set()
    others: set[str] = set()
    for e in entries:  # one pass, two sets: cheaper than a dict update per entry (W5 first push)
        if e.op == "put":
            (others if e.kind == "dir" else leaves).add(e.path.rpartition("/")[0])
    folders = dict.fromkeys(others, False)
    folders.update(dict.fromkeys(leaves, True))
    return folders


class CommitPaths(Protocol):
    """The changes of one commit, as the check needs to see them."""

    def folders(self) -> dict[str, bool]:
        """See folders_of."""

    def at(self, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        """(op, kind) of the commit's change of each of `paths` that it changes."""

    def under(self, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        """(path, op, kind) of the commit's changes under `folder`, in path order."""

    def leaves_holding(self, folders: Collection[str]) -> list[str]:
        """The commit's puts of files and links directly inside `folders` ('' for the top) under whose name
        the head of the box holds something."""


class EntryPaths:
    """A commit sent in one request: its checked entries."""

    def __init__(self, tx: CommitTx, entries: list[NewEntry]) -> None:
        self.tx, self.entries = tx, entries
        self._leaves: dict[str, list[str]] = {}  # folder -> the puts of files and links directly in it

    def folders(self) -> dict[str, bool]:
        # folders_of's pass, keeping the put files by folder for leaves_holding (no second pass over all).
        leaves = self._leaves
        others: set[str] = set()
        for e in self.entries:
            if e.op == "put":
                path = e.path
                folder = path.rpartition("/")[0]
                if e.kind == "dir":
                    others.add(folder)
                elif folder in leaves:
                    leaves[folder].append(path)
                else:
                    leaves[folder] = [path]
        folders = dict.fromkeys(others, False)
        folders.update(dict.fromkeys(leaves, True))
        return folders

    def at(self, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        wanted = set(paths)
        return {e.path: (e.op, e.kind) for e in self.entries if e.path in wanted}

    def under(self, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        start = folder + "/"
        found = sorted((e.path, e.op, e.kind) for e in self.entries if e.path.startswith(start))
        return found if limit < 0 else found[:limit]

    def leaves_holding(self, folders: Collection[str]) -> list[str]:
        leaves = [p for f in folders for p in self._leaves.get(f, ())]
        return sorted(self.tx.holding(leaves))


class StagedPaths:
    """A staged commit: its changes wait in the stage, its folders were noted as the parts came."""

    def __init__(self, tx: CommitTx, stage: int) -> None:
        self.tx, self.stage = tx, stage

    def folders(self) -> dict[str, bool]:
        return self.tx.stage_folders(self.stage)

    def at(self, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        return self.tx.staged_kinds(self.stage, list(paths))

    def under(self, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        return self.tx.staged_under(self.stage, folder, limit=limit)

    def leaves_holding(self, folders: Collection[str]) -> list[str]:
        return self.tx.staged_leaves_holding(self.stage, list(folders))


def clashes(tx: CommitTx, commit: CommitPaths) -> list[dict[str, Any]]:
    """Every file or link that the commit would leave with paths under it: [{path, kind, children}]."""
    folders = commit.folders()
    found: dict[str, dict[str, Any]] = {}
    # 1. A put inside a path that is a file or link once the commit is applied (checked at every level: a
    # folder may exist only through the paths under it).
    above: set[str] = set()
    for folder in folders:
        while folder and folder not in above:
            above.add(folder)
            folder = folder.rpartition("/")[0]
    own = commit.at(above)
    head = tx.present_kinds([p for p in above if p not in own])
    for path in sorted(above):
        op, kind = own.get(path) or ("put", head.get(path, "dir"))
        if op == "put" and kind != "dir":
            children = [p for p, o, _ in commit.under(path) if o == "put"][:SHOWN]
            if children:  # (a stage may note a folder whose put was later staged again as a delete)
                found[path] = {"path": path, "kind": kind, "children": children}
    # 2. A file or link put where the head holds paths under that name that the commit leaves in place.
    # Only a folder holding a folder with something in it can hold such a name: a commit of new files
    # into new folders, or into folders of files, looks at no put file's name.
    held = tx.holding([f for f, leaves in folders.items() if leaves], deeper=True)
    for path in commit.leaves_holding(held) if held else []:
        if path in found:
            continue
        changed = {p for p, _, _ in commit.under(path)}
        left = [p for p in tx.present_under(path) if p not in changed]
        if left:
            found[path] = {"path": path, "kind": commit.at([path])[path][1], "children": left[:SHOWN]}
    return [found[p] for p in sorted(found)]


def refusal(clash: list[dict[str, Any]], shown: Any) -> NotAFolder:
    """The 409 for `clash`; `shown` turns a box path into the path the caller sees."""
    listed = [{"path": shown(c["path"]), "kind": c["kind"], "children": [shown(p) for p in c["children"]]}
              for c in clash[:1000]]
    first = listed[0]
    what = "a link" if first["kind"] == "link" else "a file"
    return NotAFolder(
        f"{first['path']!r} would be {what} holding {first['children'][0]!r}"
        + (f" (and {len(clash) - 1} more such path(s))" if len(clash) > 1 else "")
        + ": a path is a file or a folder, not both; nothing was committed; run 'boxctl pull' and push again",
        paths=listed,
    )


__all__ = ["CommitPaths", "EntryPaths", "NotAFolder", "StagedPaths", "clashes", "folders_of", "refusal"]
