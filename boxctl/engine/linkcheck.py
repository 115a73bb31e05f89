"""Symlink targets from the network: a link may point anywhere inside the synced folder, never out of it.

Two rules, both needed:
1. `..` may only lead a target (`../../a/b`), never follow a name (`d/up/../../x`). A `..` after a name
   steps out of whatever that name is *when the link is followed*, and a later pull may turn a folder
   `d/up` into a link (`d/up -> ..`): a target accepted while `d/up` was a folder would then escape. A
   leading `..` steps out of the link's own folder, which is a plain folder (every write goes through
   folders opened without following links, boxctl/local/dirfd.py), so its depth is known when it is checked.
2. The target is resolved the way the kernel would, one name at a time, through the links already in
   the folder and the links the same pull is about to make, and must stay inside.
By induction every link then resolves inside the folder whatever later pulls change: a target climbs at
most to the root from a folder whose depth is fixed, then only descends through names, each a folder
or a link that itself resolves inside.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from boxctl.local.workspace import UnsafePath

MAX_HOPS = 40  # the kernel's own limit on links followed in one lookup


def check_link_target(path: str, target: str, root: Path | None = None,
                      links: Mapping[str, str] | None = None) -> None:
    """Refuse link `path` -> `target` if following it could leave the folder at `root` (absolute, NUL,
    `..` past the root, or through another link that does). `links` are links about to be made."""
    if not target or target.startswith("/") or "\x00" in target:
        raise UnsafePath(f"refusing link {path!r}: its target {target!r} is outside the synced folder")
    named = False
    for part in target.split("/"):
        if part == ".." and named:
            raise UnsafePath(f"refusing link {path!r}: its target {target!r} has '..' after a name, which a later "
                             "change of that name could turn into a way out of the synced folder")
        named = named or part not in ("", ".", "..")
    folder = path.split("/")[:-1]
    pending = target.split("/")
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not folder:
                raise UnsafePath(f"refusing link {path!r}: its target {target!r} leaves the synced folder")
            folder.pop()
            continue
        folder.append(part)
        here = "/".join(folder)
        inner = links.get(here) if links is not None and here != path else None
        if inner is None and root is not None:
            inner = _link_on_disk(root, here)
        if inner is None:
            continue
        hops += 1
        if hops > MAX_HOPS or inner.startswith("/") or "\x00" in inner:
            raise UnsafePath(f"refusing link {path!r}: its target {target!r} leads outside through {here!r}")
        folder.pop()
        pending[:0] = inner.split("/")


def _link_on_disk(root: Path, rel: str) -> str | None:
    """The target of `rel` if it is a symlink in the folder now (its parents were resolved already)."""
    try:
        if stat.S_ISLNK(os.lstat(root / rel).st_mode):
            return os.readlink(root / rel)
    except OSError:
        pass
    return None
