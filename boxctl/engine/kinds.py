"""Pull's part in paths that change kind: a file that becomes a folder, a folder that becomes a file.

A pull writes nothing until the way is clear, in this order:
1. the remote deletes in the way run first (`split_deletes`): synced paths under a path that becomes a
   file, and files or links where a folder is needed; the other deletes wait until after the writes,
   so that the blocks of a renamed file are still there to copy;
2. `make_room`, outermost path first: an unchanged file or link that becomes a folder is removed; a
   folder that becomes a file is removed once empty, or, if it still holds what this device had not
   synced (new files, edits), moved aside whole as a conflicted copy; any other file or link where a
   folder is needed is a local change (never synced, or edited), and is moved aside as a conflicted copy.
So the remote kind takes the name and nothing of this device's is lost: the copies are new paths that
the next push sends. Every look and every removal goes through the pull's open folders (boxctl/local/dirfd.py):
a folder above swapped for a link is never followed, and a path that cannot be cleared (swapped, or not
writable) is left as it is, so the write that wanted it is refused and asked for again by the next pull.
The server never holds a file with paths under it (server_min/service/kinds.py), so a
synced file in the way of a folder always comes with a remote change of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable
from typing import Any

from box_common.paths import parent_paths
from boxctl.local.dirfd import SafeRoot
from boxctl.local.index import IndexEntry
from boxctl.local.workspace import LocalEntry, UnsafePath

Aside = Callable[[str], None]  # moves a path aside as a conflicted copy, and notes it in the pull's result


def folders_of(writes: Iterable[dict[str, Any]]) -> set[str]:
    """Every folder that holds one of `writes`, at any depth."""
    folders: set[str] = set()
    for remote in writes:
        folder = remote["path"].rpartition("/")[0]
        while folder and folder not in folders:
            folders.add(folder)
            folder = folder.rpartition("/")[0]
    return folders


def split_deletes(deletes: list[dict[str, Any]], writes: list[dict[str, Any]],
                  folders: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the deletes in the way of `writes`, to run before them; the others). `folders`: folders_of(writes)."""
    if not deletes:
        return [], []
    leaves = {r["path"] for r in writes if r["kind"] != "dir"}
    first, rest = [], []
    for remote in deletes:
        path = remote["path"]
        if (path in folders and remote["local_kind"] != "dir") or any(p in leaves for p in parent_paths(path)):
            first.append(remote)
        else:
            rest.append(remote)
    return first, rest


def _retyped(remote: dict[str, Any]) -> bool:
    """True if the write replaces a local folder by a file or link, or a file or link by a folder."""
    expect = remote.get("expect")
    return expect is not None and (expect.kind == "dir") != (remote["kind"] == "dir")


def make_room(safe: SafeRoot, writes: list[dict[str, Any]], folders: set[str], base: dict[str, IndexEntry],
              index_dels: list[str], kept: list[str], aside: Aside) -> None:
    """Clear the way for `writes` (see the module's docstring); `folders` is folders_of(writes).

    Index entries of paths moved aside inside a folder go to `index_dels`: those paths are new now. A
    path moved aside is no longer reported as `kept` in place.
    """
    retyped = {r["path"]: r for r in writes if r["expect"] is not None and _retyped(r)}
    gone: set[str] = set()  # paths with nothing of ours left under them
    for path in sorted(folders | retyped.keys()):  # a folder sorts before what it holds
        remote = retyped.get(path)
        if path.rpartition("/")[0] in gone:
            gone.add(path)
            if remote is not None:
                remote["expect"] = None
            continue
        if remote is not None:
            _retype(safe, remote, base, index_dels, aside)
            gone.add(path)
            continue
        now = _look(safe, path)
        if now is None:
            gone.add(path)
        elif now.kind != "dir":
            aside(path)
            gone.add(path)
            with contextlib.suppress(ValueError):
                kept.remove(path)


def _look(folders: SafeRoot, path: str) -> LocalEntry | None:
    """What is at `path`, through open folders; None if nothing, or if a folder above is not a plain folder
    (then nothing is cleared there, and the write is refused when it gets there)."""
    try:
        return folders.entry(path)
    except UnsafePath:
        return None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENAMETOOLONG):
            return None
        raise


def _retype(folders: SafeRoot, remote: dict[str, Any], base: dict[str, IndexEntry], index_dels: list[str],
            aside: Aside) -> None:
    """Free the path of a write that changes its kind; the write then expects nothing there."""
    path, expect = remote["path"], remote["expect"]
    remote["expect"] = None
    now = _look(folders, path)
    if now is None:
        return
    try:
        fd, name = folders.parent(path)
        folders.verify(path.rpartition("/")[0])
    except (UnsafePath, FileNotFoundError):
        return
    if expect.kind != "dir":  # an unchanged file or link that becomes a folder
        if (now.kind, now.size, now.mtime_ns, now.inode) == (expect.kind, expect.size, expect.mtime_ns, expect.inode):
            with contextlib.suppress(FileNotFoundError, PermissionError):  # not writable: the write is refused
                os.unlink(name, dir_fd=fd)
        else:
            aside(path)  # edited since the pull looked at it: keep the edit
        return
    try:
        os.rmdir(name, dir_fd=fd)  # the remote deleted what it held (step 1): empty unless this device added to it
        folders.forget(path)
    except FileNotFoundError:
        folders.forget(path)
    except OSError:
        aside(path)
        folders.forget(path)
        inside = path + "/"
        index_dels.extend(p for p in base if p.startswith(inside))
