"""Diff: what changed between two revisions of the box, or between the last sync and the folder.

The list of changed paths costs no download: revisions are compared by their trees' content hashes,
the folder by the same stat-and-hash comparison `status` makes. Only a text diff reads content: the
old side's blocks come from the server (each checked against its SHA-256), the folder's from disk.
Folders are not listed themselves (their files are), unless a path changed between file and folder.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from box_common.paths import is_under
from box_common.schemas import Entry
from box_common.units import format_size
from boxctl.engine.apply import _block_sizes, _take
from boxctl.errors import NotFound, UsageError
from boxctl.transfer.download import download_blocks

if TYPE_CHECKING:
    from boxctl.engine.core import Engine

TEXT_LIMIT = 1 << 20  # larger files are said to differ, not diffed (difflib's time grows with the line count)
SNIFF = 8192  # a NUL byte in the first bytes: binary, as git and diff decide


@dataclass(frozen=True)
class Side:
    """One version of a path: in the box (its blocks) or in the folder (its file)."""

    kind: str
    size: int
    mode: int
    blocks: tuple[str, ...] = ()
    target: str | None = None
    local: Path | None = None  # the file in the folder, for the folder's side


class ChangeJson(TypedDict):
    """One path in `boxctl diff --json`."""

    path: str
    change: str
    kind_before: str | None
    kind_after: str | None
    size_before: int | None
    size_after: int | None


@dataclass(frozen=True)
class PathDiff:
    """A path that differs between the two sides (None: absent on that side)."""

    path: str
    before: Side | None
    after: Side | None

    @property
    def change(self) -> str:
        if self.before is None:
            return "added"
        if self.after is None:
            return "deleted"
        return "type_changed" if self.before.kind != self.after.kind else "modified"

    def as_json(self) -> ChangeJson:
        b, a = self.before, self.after
        return {"path": self.path, "change": self.change, "kind_before": b.kind if b else None,
                "kind_after": a.kind if a else None, "size_before": b.size if b else None,
                "size_after": a.size if a else None}


def parse_revs(text: str) -> tuple[int, int | None]:
    """`A..B`, `A..` or `A` (both A..head) as (A, B or None for the head); UsageError otherwise."""
    first, dots, second = text.partition("..")
    try:
        a = int(first)
        b = int(second) if second else None
    except ValueError:
        raise UsageError(f"--rev takes A..B, A.. or A (commit numbers, see 'boxctl log'), not {text!r}") from None
    if a < 0 or (b is not None and b < 0) or (not dots and second):
        raise UsageError(f"--rev takes commit numbers of 0 or more, not {text!r}")
    return a, b


def _side(e: Entry) -> Side:
    return Side(e["kind"], int(e["size"]), int(e["mode"]), tuple(e["blocks"]), e["target"])


def _same(a: Entry, b: Entry) -> bool:
    return (a["kind"], a["content_hash"], a["mode"]) == (b["kind"], b["content_hash"], b["mode"])


def between_revisions(engine: Engine, prefix: str, a: int, b: int | None) -> tuple[int, int, list[PathDiff]]:
    """(seq A, seq B, the paths under `prefix` that differ from commit A to commit B, or the head)."""
    old, new = engine.tree(prefix, a), engine.tree(prefix, b)
    before = {e["path"]: e for e in old["entries"] if is_under(e["path"], prefix)}
    after = {e["path"]: e for e in new["entries"] if is_under(e["path"], prefix)}
    if prefix and not before and not after:
        raise NotFound(f"{prefix} is in neither commit {old['seq']} nor commit {new['seq']}")
    diffs = []
    for path in sorted(before.keys() | after.keys()):
        x, y = before.get(path), after.get(path)
        if (x is not None and y is not None and _same(x, y)) or _only_folders(x, y):
            continue
        diffs.append(PathDiff(path, _side(x) if x else None, _side(y) if y else None))
    return int(old["seq"]), int(new["seq"]), diffs


def since_sync(engine: Engine, prefix: str) -> list[PathDiff]:
    """The paths under `prefix` that changed in the folder since the last sync (what `status` lists)."""
    if prefix and engine.index.get(prefix) is None and engine.workspace.stat(prefix) is None \
            and not any(is_under(p, prefix) for p in engine.index.stats()):
        raise NotFound(f"{prefix} is neither in the folder nor in its last sync")
    diffs = []
    for c in engine.local_changes(refresh=False):
        if not is_under(c.path, prefix):
            continue
        old = c.base
        before = Side(old.kind, old.size, old.mode, tuple(old.block_ids), old.target) if old else None
        now = c.local
        after = Side(now.kind, now.size, now.mode, (), now.target, engine.root / c.path) if now else None
        if not _only_folders(before, after):
            diffs.append(PathDiff(c.path, before, after))
    return diffs


def _only_folders(x: Entry | Side | None, y: Entry | Side | None) -> bool:
    """True when neither side is anything but a folder: a folder's own change is not listed."""
    kinds = {(s["kind"] if isinstance(s, dict) else s.kind) for s in (x, y) if s is not None}
    return kinds == {"dir"}


def describe(engine: Engine, d: PathDiff, labels: tuple[str, str]) -> list[str]:
    """The lines that show one change: a unified diff for text files, one line for anything else."""
    b, a = d.before, d.after
    if b is not None and a is not None and b.kind != a.kind:
        return [f"{d.path}: {_kind(b)} -> {_kind(a)}\n"]
    side = a or b
    assert side is not None
    if side.kind == "link":
        return [f"{d.path}: {_kind(b) if b else 'nothing'} -> {_kind(a) if a else 'nothing'}\n"]
    if side.kind == "dir":
        return [f"{d.path}/: folder {d.change}\n"]
    if b is not None and a is not None and b.mode != a.mode and b.blocks == a.blocks and a.local is None:
        return [f"{d.path}: mode {b.mode:o} -> {a.mode:o}\n"]
    old, new = (_bytes(engine, d.path, s) for s in (b, a))
    name_a, name_b = (f"a/{d.path}" if b else "/dev/null"), (f"b/{d.path}" if a else "/dev/null")
    if old is None or new is None:
        return [f"Files {name_a} and {name_b} differ ({_size(b)} -> {_size(a)}; too large for a text diff)\n"]
    old_text, new_text = _text(old), _text(new)
    if old_text is None or new_text is None:
        return [f"Binary files {name_a} and {name_b} differ ({_size(b)} -> {_size(a)})\n"]
    lines = list(difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
                                      name_a, name_b, labels[0], labels[1]))
    if b is not None and a is not None and b.mode != a.mode:
        lines.insert(0, f"{d.path}: mode {b.mode:o} -> {a.mode:o}\n")
    if not lines:  # the same bytes (a file touched, then saved back as it was)
        return []
    return [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines]


def _kind(s: Side | None) -> str:
    if s is None:
        return "nothing"
    if s.kind == "link":
        return f"link to {s.target!r}"
    return "folder" if s.kind == "dir" else "file"


def _size(s: Side | None) -> str:
    return format_size(s.size) if s is not None else "absent"


def _bytes(engine: Engine, path: str, side: Side | None) -> bytes | None:
    """The content of one side (b'' when absent), or None when it is too large for a text diff."""
    if side is None:
        return b""
    if side.size > TEXT_LIMIT:
        return None
    if side.local is not None:
        with open(side.local, "rb") as f:
            data = f.read(TEXT_LIMIT + 1)
        return data if len(data) <= TEXT_LIMIT else None
    stream = download_blocks(engine.api, _block_sizes([{"blocks": list(side.blocks), "size": side.size}]))
    return b"".join(_take(stream, len(side.blocks), path, side.size))


def _text(data: bytes) -> str | None:
    """`data` as text, or None for binary data (a NUL byte near the start, or not UTF-8)."""
    if b"\x00" in data[:SNIFF]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
