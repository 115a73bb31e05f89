"""Conflicted copies: the name a local edit is kept under when a remote version takes its path (rule 3).

A copy never replaces anything: two conflicts on one file within the same second (the stamp's
resolution) give `report (conflicted copy from laptop 2026-11-25 10-15-00).txt`, then
`report (conflicted copy from laptop 2026-11-25 10-15-00 2).txt`.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from box_common.paths import MAX_DEVICE_NAME_BYTES, clip_utf8
from boxctl.local.dirfd import SafeRoot
from boxctl.local.durable import rename_noreplace


def conflict_name(path: str, device: str, when: float | None = None, n: int = 1) -> str:
    """`dir/report (conflicted copy from laptop 2026-11-25 10-15-00).txt` for `dir/report.txt`;
    with `n` > 1, the n-th such name (` 2` before the closing parenthesis)."""
    folder, _, name = path.rpartition("/")
    device = clip_utf8(device, MAX_DEVICE_NAME_BYTES)  # the server keeps names short enough for this suffix
    stamp = time.strftime("%Y-%m-%d %H-%M-%S", time.localtime(when if when is not None else time.time()))
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    counter = f" {n}" if n > 1 else ""
    new = f"{stem} (conflicted copy from {device} {stamp}{counter}){ext}"
    return f"{folder}/{new}" if folder else new


def move_aside(root: Path | SafeRoot, path: str, device: str, when: float | None = None) -> str:
    """Rename what is at `path` (a file, link or folder) to a free conflicted-copy name; return that name.

    The rename is made inside the open folder that holds `path` (`root` is the pull's SafeRoot, or the
    synced folder's path, opened for this one call), so a folder above swapped for a link is refused
    (UnsafePath), never followed. Raises FileNotFoundError if nothing is at `path` any more.
    """
    if not isinstance(root, SafeRoot):
        with SafeRoot(root) as folders:
            return move_aside(folders, path, device, when)
    when = time.time() if when is None else when
    fd, name = root.parent(path)
    for n in itertools.count(1):
        copy = conflict_name(path, device, when, n)
        try:
            rename_noreplace(name, copy.rpartition("/")[2], dir_fd=fd)
        except FileExistsError:
            continue  # that name is taken, by an earlier copy or by a file of the user's
        root.forget(path)  # a folder moved aside: its cached descriptors name it no more
        return copy
    raise AssertionError("unreachable")
