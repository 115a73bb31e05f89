"""Get and cat: a file or folder of a box, as it is or was, downloaded without a synced folder.

Where things land (as `cp -r` and `curl -o` users expect, and without their surprises):
- a file goes to DEST; DEST defaults to its own name in the current folder; if DEST is a folder (or ends
  with '/') the file goes inside it under its own name;
- a folder's contents go into DEST (created if absent; DEST defaults to the folder's own name), merged
  with what DEST already holds: a CI job fetching the same folder again gets the same paths again.
A file already there with the same content is left as it is. One with other content is never replaced
unless `force` (then it is, as `cp` does): without it the get refuses before writing anything, naming
`--force`. A folder where a file must go, or a file where a folder must go, is refused even then.
Every file is written to a temp file beside its place, fsynced and renamed; every path from the server
is checked as a pull checks it (no `..`, no writing through links, no link that points outside DEST).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from box_common.paths import InvalidPath, is_under, normalize_path
from box_common.schemas import Entry
from box_common.units import format_size
from boxctl.chunking import content_hash
from boxctl.engine.apply import FREE_SPACE_MARGIN, _block_sizes, _swapped, _take
from boxctl.engine.linkcheck import check_link_target
from boxctl.engine.remote import RemoteBox
from boxctl.engine.results import Progress, _no_progress
from boxctl.errors import BoxError, UsageError
from boxctl.local.dirfd import SafeRoot
from boxctl.local.durable import rename_noreplace, write_temp
from boxctl.local.workspace import UnsafePath, make_link
from boxctl.transfer.download import download_blocks
from boxctl.transfer.upload import default_jobs


class GetJson(TypedDict):
    """`boxctl get --json`."""

    box: str
    path: str
    seq: int
    dest: str
    written: list[str]
    unchanged: list[str]
    refused: list[dict[str, str]]
    bytes: int


@dataclass
class GetResult:
    """What a get wrote: paths relative to DEST (a single file: its own name)."""

    box: str
    path: str
    seq: int
    dest: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0

    def as_json(self) -> GetJson:
        return {"box": self.box, "path": self.path, "seq": self.seq, "dest": str(self.dest),
                "written": self.written, "unchanged": self.unchanged,
                "refused": [{"path": p, "reason": r} for p, r in self.refused], "bytes": self.bytes}


@dataclass(slots=True)
class _Target:
    """One entry of the box and where it goes under DEST."""

    entry: Entry
    rel: str  # relative to the folder written into ('' never: a single file is written by name)


def file_bytes(remote: RemoteBox, at: int | None = None, when: float | None = None,
        threads: int | None = None) -> Iterator[bytes]:
    """The bytes of one file of the box, block by block, each checked against its SHA-256 (IntegrityError
    names a damaged one); UsageError for a folder or a link, NotFound when there is no such path."""
    path = remote.view(remote.ref.path)
    _, entries = remote.entries(path, at, when)
    entry = next((e for e in entries if e["path"] == path), None)
    if entry is None or entry["kind"] == "dir":
        raise UsageError(f"{remote.ref} is a folder: 'boxctl get' downloads folders")
    if entry["kind"] == "link":
        raise UsageError(f"{remote.ref} is a symlink to {entry['target']!r}, not a file")
    stream = download_blocks(remote.api, _block_sizes([entry]), threads or default_jobs())
    return _take(stream, len(entry["blocks"]), path, int(entry["size"]))


class Get:
    """One get of a box path into a local destination (see the module's docstring)."""

    def __init__(self, remote: RemoteBox, progress: Progress | None = None, threads: int | None = None) -> None:
        self.remote = remote
        self.progress = progress or _no_progress
        self.threads = threads or default_jobs()

    def run(self, dest: Path | None, cwd: Path, at: int | None = None, when: float | None = None,
            force: bool = False) -> GetResult:
        remote = self.remote
        path = remote.view(remote.ref.path)
        seq, entries = remote.entries(path, at, when)
        name = (remote.ref.path.rsplit("/", 1)[-1]) or remote.ref.box
        top = next((e for e in entries if e["path"] == path), None)
        single = top is not None and top["kind"] != "dir"
        given = str(dest) if dest is not None else ""
        place = cwd / dest if dest is not None else cwd / name
        if single:
            if given.endswith("/") or place.is_dir():
                place = place / name
            root, targets = place.parent, [_Target(top, place.name)] if top is not None else []
        else:
            root = place
            targets = self._targets(entries, path)
        result = GetResult(remote.label, str(remote.ref), seq, place)
        refused = self._check(root, targets, force, result, from_server=not single)
        self._check_space(root, [t for t in targets if t.rel not in refused])
        self._write(root, [t for t in targets if t.rel not in refused], force, result)
        return result

    def _targets(self, entries: list[Entry], prefix: str) -> list[_Target]:
        """Each entry under folder `prefix`, at its path relative to it."""
        targets = []
        for e in entries:
            if e["path"] == prefix:
                continue
            rel = e["path"][len(prefix) + 1 :] if prefix else e["path"]
            targets.append(_Target(e, rel))
        return sorted(targets, key=lambda t: t.rel)

    def _check(self, root: Path, targets: list[_Target], force: bool, result: GetResult,
               from_server: bool) -> set[str]:
        """Look at what is in the way before anything is written: identical files are left alone; other
        content needs `force`; a file and a folder in each other's place are refused. Returns the rels
        that are not to be written (refused as unsafe, or already there). `from_server`: the rels are
        paths the server named (a folder's contents), checked like a pull checks them."""
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root} is a file: a folder cannot be written there; nothing was written")
        skip: set[str] = set()
        differ: list[str] = []
        asked = self.remote.view(self.remote.ref.path)
        for t in targets:
            e = t.entry
            if from_server and not _inside(t.rel, e["path"], asked):
                result.refused.append((t.rel, f"refusing path from the server: {e['path']!r}"))
                skip.add(t.rel)
                continue
            try:
                st = os.lstat(root / t.rel)
            except (FileNotFoundError, NotADirectoryError):
                continue
            here = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
            if (here == "dir") != (e["kind"] == "dir"):
                raise UsageError(f"{root / t.rel} is {_a(here)} here and {_a(e['kind'])} in the box: move it away "
                                 "first; nothing was written")
            if e["kind"] == "dir":
                continue
            if self._same(root / t.rel, st, e):
                skip.add(t.rel)
                result.unchanged.append(t.rel)
            elif not force:
                differ.append(t.rel)
        if differ:
            what = f"{root / differ[0]} already exists" if len(differ) == 1 else (
                f"{len(differ)} files already exist (first {root / differ[0]})")
            raise UsageError(f"{what} with other content: pass --force to replace, or choose another DEST; "
                             "nothing was written")
        return skip

    def _same(self, local: Path, st: os.stat_result, entry: Entry) -> bool:
        """True if the local path holds exactly the entry (so nothing needs writing)."""
        if entry["kind"] == "link":
            return stat.S_ISLNK(st.st_mode) and os.readlink(local) == entry["target"]
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["size"] or st.st_mode & 0o777 != entry["mode"]:
            return False
        digests, _ = self.remote.chunker.digests(local)
        return content_hash("file", digests, None) == entry["content_hash"]

    def _check_space(self, root: Path, targets: list[_Target]) -> None:
        """Refuse before writing anything when the files would not fit (see Apply._check_free_space)."""
        needed = sum(int(t.entry["size"]) for t in targets if t.entry["kind"] == "file")
        where = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(where).free
        if needed and needed + FREE_SPACE_MARGIN > free:
            raise BoxError(f"not enough free space in {where}: this get writes {format_size(needed)} and "
                           f"{format_size(free)} is free; nothing was written")

    def _write(self, root: Path, targets: list[_Target], force: bool, result: GetResult) -> None:
        """Folders, then files (temp, fsync, rename), then links, each through folders of `root` opened
        without following links (boxctl/local/dirfd.py)."""
        root.mkdir(parents=True, exist_ok=True)
        files = [t for t in targets if t.entry["kind"] == "file"]
        total = sum(int(t.entry["size"]) for t in files)
        links = {t.rel: str(t.entry["target"]) for t in targets if t.entry["kind"] == "link"}
        with SafeRoot(root) as folders:
            for t in targets:
                try:
                    if t.entry["kind"] == "dir":
                        folders.folder(t.rel, create=True)
                    else:
                        folders.parent(t.rel, create=True)
                except (UnsafePath, OSError) as exc:
                    result.refused.append((t.rel, _swapped(t.rel, exc).message))
            stream = download_blocks(self.remote.api, _block_sizes([t.entry for t in files]), self.threads)
            for t in files:
                chunks = _take(stream, len(t.entry["blocks"]), t.entry["path"], int(t.entry["size"]))
                self._write_file(folders, t, chunks, force, result)
                self.progress("get", result.bytes, total)
            for t in targets:
                if t.entry["kind"] == "link":
                    try:
                        check_link_target(t.rel, links[t.rel], root, links)
                        fd, name = folders.parent(t.rel)
                        make_link(name, links[t.rel], dir_fd=fd)
                        result.written.append(t.rel)
                    except (UnsafePath, OSError) as exc:
                        result.refused.append((t.rel, _swapped(t.rel, exc).message))

    def _write_file(self, folders: SafeRoot, t: _Target, chunks: Iterator[bytes], force: bool,
                    result: GetResult) -> None:
        """One file: its blocks to a temp beside its place, then renamed over it (only with `force` over
        something there; a file that appeared meanwhile is otherwise kept and the get refused for it)."""
        folder = t.rel.rpartition("/")[0]
        temp = None
        fd = -1
        try:
            fd, name = folders.parent(t.rel)
            temp = write_temp(name, chunks, int(t.entry["mode"]), int(t.entry["mtime_ns"]), dir_fd=fd)
            folders.verify(folder)  # not moved or swapped for a link while it downloaded
            if force:
                os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                rename_noreplace(temp, name, dir_fd=fd)
            temp = None
        except FileExistsError:
            result.refused.append((t.rel, "a file appeared there during the get; it was kept (--force replaces it)"))
            return
        except (UnsafePath, OSError) as exc:
            for _ in chunks:
                pass  # the stream stays in step with the files
            result.refused.append((t.rel, _swapped(t.rel, exc).message))
            return
        finally:
            if temp is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=fd)
        result.written.append(t.rel)
        result.bytes += int(t.entry["size"])


def _inside(rel: str, path: str, asked: str) -> bool:
    """True if a server's entry `path` is a canonical path inside the path `asked` for (rule 6)."""
    try:
        return normalize_path(rel) == rel and normalize_path(path) == path and is_under(path, asked)
    except InvalidPath:
        return False


def _a(kind: str) -> str:
    return {"dir": "a folder", "link": "a symlink"}.get(kind, "a file")
