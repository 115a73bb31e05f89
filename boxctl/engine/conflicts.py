"""Conflicted copies: the name a local edit is kept under when a remote version takes its path (rule 3),
and finding them again in a folder (`boxctl conflicts`).

A copy never replaces anything: two conflicts on one file within the same second (the stamp's
resolution) give `report (conflicted copy from laptop 2026-11-25 10-15-00).txt`, then
`report (conflicted copy from laptop 2026-11-25 10-15-00 2).txt`.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from box_common.paths import MAX_DEVICE_NAME_BYTES, clip_utf8
from boxctl.local.dirfd import SafeRoot
from boxctl.local.durable import rename_noreplace

if TYPE_CHECKING:
    from boxctl.engine.base import EngineBase


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


# `conflict_name`'s pattern: STEM (conflicted copy from DEVICE YYYY-MM-DD HH-MM-SS[ N])EXT, EXT without a dot.
_COPY = re.compile(r"^(?P<stem>.+) \(conflicted copy from (?P<device>.+) "
                   r"(?P<stamp>\d{4}-\d{2}-\d{2} \d{2}-\d{2}-\d{2})(?: (?P<n>\d+))?\)(?P<ext>\.[^.]*)?$", re.DOTALL)


class ConflictJson(TypedDict):
    """One copy in `boxctl conflicts --json`."""

    copy: str
    path: str
    device: str
    time: str
    kind: str
    path_exists: bool


@dataclass(frozen=True)
class ConflictCopy:
    """A conflicted copy in the folder and the path it was kept beside."""

    copy: str
    path: str  # the file (or folder) it belongs to
    device: str  # the device whose edit it keeps
    time: str  # when it was made, as in its name: 2026-11-25 10-15-00
    kind: str  # file | dir | link
    original_exists: bool  # whether `path` is still there

    def as_json(self) -> ConflictJson:
        return {"copy": self.copy, "path": self.path, "device": self.device, "time": self.time, "kind": self.kind,
                "path_exists": self.original_exists}


def parse_copy(path: str) -> tuple[str, str, str] | None:
    """(the path a conflicted copy belongs to, its device, its stamp) for a name made by conflict_name;
    None for any other name."""
    folder, _, name = path.rpartition("/")
    found = _COPY.match(name)
    if found is None:
        return None
    original = found["stem"] + (found["ext"] or "")
    return (f"{folder}/{original}" if folder else original), found["device"], found["stamp"]


def find_copies(scan: dict[str, str]) -> list[ConflictCopy]:
    """The conflicted copies among the paths of a scan (path -> kind), each with the path it belongs to.
    Inside a folder kept as a copy, only the folder itself is listed."""
    copies: list[ConflictCopy] = []
    for path in sorted(scan):
        parsed = parse_copy(path)
        if parsed is None or any(path.startswith(c.copy + "/") for c in copies):
            continue
        original, device, stamp = parsed
        copies.append(ConflictCopy(path, original, device, stamp, scan[path], original in scan))
    return copies


def in_folder(engine: EngineBase) -> list[ConflictCopy]:
    """The conflicted copies in the synced folder now (one walk of it, nothing read or sent)."""
    return find_copies({path: found[0] for path, found in engine.workspace.scan_stats().items()})
