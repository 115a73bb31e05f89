"""Put: local files and folders into a path of a box as one commit, without a synced folder (CI artifacts).

Where things land (the rule `boxctl put --help` and the README state):
- `put FILE OWNER/BOX/PATH`: the file becomes PATH; if PATH is a folder in the box, it goes inside it
  under its own name (as `cp` does).
- `put DIR OWNER/BOX/PATH`: PATH becomes the folder, its contents merged into what PATH already holds
  (as `rsync -r DIR/ PATH/` or `aws s3 cp --recursive`): a CI job that runs again puts the same paths again.
- With the box root as PATH, a PATH ending in '/', or several LOCALs: each goes inside PATH under its own
  name.
Files already in the box are overwritten, as `cp` does: each change is based on the box's current
revision of its path, so another writer's commit in between is not a conflict but an older version
(kept in the history). Nothing under PATH is deleted. A file where the box has a folder, or a folder
where it has a file, is refused before anything is sent.

Blocks go through push's pipeline: the content-defined chunking of the box, the missing-block query
(only what the server lacks travels), and deltas against the version being overwritten.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from box_common.paths import InvalidPath, is_under, normalize_path, parent_paths
from box_common.schemas import ChangeIn, CommitIn, Entry
from boxctl.chunking import content_hash, hash_piece
from boxctl.engine.remote import RemoteBox, check_target
from boxctl.engine.results import Progress, _no_progress
from boxctl.errors import BoxError, PushRejected, UsageError
from boxctl.local.workspace import LocalEntry, Workspace
from boxctl.transfer.pipeline import ordered_map
from boxctl.transfer.upload import BlockUploader, UploadStats, default_jobs

COMMIT_TRIES = 5  # another writer committing to the same paths meanwhile: base on the new head and go again


@dataclass(slots=True)
class PutItem:
    """One path of a put: what it is here, where it goes, and what it does to the box."""

    path: str  # in the caller's view of the box
    source: str  # the path on this machine
    local: LocalEntry
    status: str = "added"  # added | modified | unchanged
    digests: bytes = b""

    @property
    def kind(self) -> str:
        return self.local.kind


class PutJson(TypedDict):
    """`boxctl put --json`."""

    box: str
    path: str
    seq: int | None
    dry_run: bool
    added: list[str]
    modified: list[str]
    unchanged: int
    ignored: list[str]
    files: int
    bytes: int
    blocks_sent: int
    blocks_delta: int
    bytes_sent: int


@dataclass
class PutResult:
    """What a put did (or, with dry_run, would do)."""

    box: str
    dest: str
    items: list[PutItem]
    dry_run: bool = False
    seq: int | None = None
    stats: UploadStats = field(default_factory=UploadStats)
    ignored: list[str] = field(default_factory=list)

    def changed(self, status: str) -> list[str]:
        return [i.path for i in self.items if i.status == status]

    def as_json(self) -> PutJson:
        files = [i for i in self.items if i.kind == "file"]
        return {"box": self.box, "path": self.dest, "seq": self.seq, "dry_run": self.dry_run,
                "added": self.changed("added"), "modified": self.changed("modified"),
                "unchanged": len(self.changed("unchanged")), "ignored": self.ignored, "files": len(files),
                "bytes": sum(i.local.size for i in files), "blocks_sent": self.stats.blocks_sent,
                "blocks_delta": self.stats.blocks_delta, "bytes_sent": self.stats.bytes_sent}


class Put:
    """One put of local paths into a box (see the module's docstring for where they land)."""

    def __init__(self, remote: RemoteBox, progress: Progress | None = None, threads: int | None = None,
                 delta: bool = True) -> None:
        self.remote = remote
        self.progress = progress or _no_progress
        self.threads = threads or default_jobs()
        self.uploads = self.threads  # batches in flight, as the engine's push keeps them
        self.delta = delta
        self.ignored: list[str] = []

    def run(self, sources: list[Path], message: str = "", dry_run: bool = False) -> PutResult:
        """Upload what the box lacks and commit every path in one commit (nothing at all with `dry_run`)."""
        remote = self.remote
        remote.check_can_write()
        dest = remote.view(remote.ref.path)
        head = self._head(dest)
        items = self._items(self._roots(sources, dest, head))
        _check_kinds(items, head, remote.shown)
        result = PutResult(remote.label, remote.shown(dest), items, dry_run=dry_run, ignored=self.ignored)
        result.stats = self._read_and_upload(items, head, dry_run)
        if dry_run:
            _judge(items, head)
            return result
        # The folders above what is put get entries of their own, as a push gives them: else every device
        # that pulls this would commit them itself. Those that exist already are found by the commit's answer.
        above = sorted({p for i in items for p in parent_paths(i.path)} - {i.path for i in items})
        if dest in head:
            above = [p for p in above if is_under(p, dest)]  # dest has its entry: so have the folders above it
        for attempt in range(COMMIT_TRIES):
            changes = _judge(items, head)
            if not changes:
                return result
            body: CommitIn = {"message": message or _message(dest, items), "key": secrets.token_urlsafe(16),
                              "changes": [*_folders(above), *changes]}
            try:
                result.seq = int(remote.api.commit(remote.box_id, body)["seq"])
                return result
            except PushRejected as exc:
                conflicts = exc.details.get("conflicts") or []
                if not conflicts:  # a path that would be both a file and a folder
                    reason = exc.message.split("; run ")[0]
                    raise UsageError(f"cannot put there: {reason}") from None
                probed = set(above)
                above = [p for p in above if not any(c["path"] == p and c["present"] for c in conflicts)]
                if attempt == COMMIT_TRIES - 1:
                    raise PushRejected(f"{remote.label}/{remote.shown(dest)} kept changing while {COMMIT_TRIES} "
                                       "commits were tried; nothing was committed: put again") from None
                if any(c["path"] not in probed for c in conflicts):
                    head = self._head(dest)  # another writer committed meanwhile: overwrite its version in turn
                    _check_kinds(items, head, remote.shown)
        raise AssertionError("unreachable")

    def _head(self, dest: str) -> dict[str, Entry]:
        """The box's current entries at and under `dest`."""
        return {e["path"]: e for e in self.remote.tree(dest)["entries"] if is_under(e["path"], dest)}

    def _roots(self, sources: list[Path], dest: str, head: dict[str, Entry]) -> list[tuple[Path, str]]:
        """(the local path, its path in the box) of each LOCAL given."""
        if not sources:
            raise UsageError("give at least one LOCAL file or folder to put")
        found: list[tuple[Path, os.stat_result]] = []
        for source in sources:
            try:
                found.append((source, os.stat(source)))  # a link given by name is followed: the user chose it
            except FileNotFoundError:
                raise UsageError(f"{source}: no such file or folder; nothing was sent") from None
            except OSError as exc:
                raise BoxError(f"{source}: {exc.strerror}; nothing was sent") from None
        for source, st in found:
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise UsageError(f"{source} is not a regular file or folder; nothing was sent")
        at = head.get(dest)
        dest_is_folder = not dest or (at is not None and at["kind"] == "dir") or any(
            p.startswith(dest + "/") for p in head)
        single_file = len(found) == 1 and stat.S_ISREG(found[0][1].st_mode)
        inside = self.remote.ref.folder or len(found) > 1 or (single_file and dest_is_folder)
        if inside and at is not None and at["kind"] != "dir":
            raise UsageError(f"{self.remote.shown(dest)} is a {at['kind']} in {self.remote.label}, not a folder; "
                             "nothing was sent")
        roots: list[tuple[Path, str]] = []
        for source, _ in found:
            name = Path(os.path.abspath(source)).name
            target = (f"{dest}/{name}" if dest else name) if inside else dest
            try:
                target = check_target(normalize_path(target))
            except InvalidPath as exc:
                raise UsageError(f"cannot put {source} there: {exc}") from None
            roots.append((Path(os.path.realpath(source)), target))
        targets = [t for _, t in roots]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise UsageError(f"two LOCALs would both be put at {self.remote.shown(twice[0])}; nothing was sent")
        return roots

    def _items(self, roots: list[tuple[Path, str]]) -> list[PutItem]:
        """Every path to put: each file given, each folder given and everything in it (as push walks a
        synced folder: links kept as links, `.boxignore` obeyed, no `.box/`)."""
        items: list[PutItem] = []
        for source, target in roots:
            st = os.stat(source)
            if stat.S_ISREG(st.st_mode):
                local = LocalEntry(target, "file", st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777)
                items.append(PutItem(target, str(source), local))
                continue
            items.append(PutItem(target, str(source), LocalEntry(target, "dir", 0, 0, st.st_ino, 0o755)))
            workspace = Workspace(source)
            found = workspace.scan()
            if workspace.skipped:
                path, why = workspace.skipped[0]
                more = f" (and {len(workspace.skipped) - 1} more)" if len(workspace.skipped) > 1 else ""
                raise BoxError(f"cannot put {source / path}: {why}{more}; nothing was sent")
            self.ignored += [f"{source}/{p}" for p in workspace.ignored]
            for rel in sorted(found):
                path = check_target(f"{target}/{rel}")
                items.append(PutItem(path, str(source / rel), found[rel]))
        return sorted(items, key=lambda i: i.path)

    def _read_and_upload(self, items: list[PutItem], head: dict[str, Entry], dry_run: bool) -> UploadStats:
        """Cut each file into blocks and hash them (reading on a pool); unless `dry_run`, upload the blocks
        the server lacks, as deltas against the version of the same path in the box where that is smaller."""
        files = [i for i in items if i.kind == "file"]
        total = sum(i.local.size for i in files)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            self.progress("put", done, total)

        known = {bytes.fromhex(h) for e in head.values() for h in e["blocks"]}  # in the box: on the server
        uploader = None if dry_run else BlockUploader(self.remote.api, self.uploads, on_progress=advance,
                                                      known=known, delta=self.delta)
        chunker = self.remote.chunker
        try:
            with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="hash") as pool:
                for item in files:
                    old = head.get(item.path)
                    bases = [bytes.fromhex(h) for h in old["blocks"]] if old and old["kind"] == "file" else []
                    digests: list[bytes] = []
                    size = 0
                    try:
                        pieces = chunker.pieces(item.source)
                        for n, block in enumerate(ordered_map(hash_piece, pieces, pool, ahead=2 * self.threads)):
                            digests.append(block.digest)
                            size += len(block.data)
                            if uploader is None:
                                advance(len(block.data))
                            else:  # the previous version's block at the same place: the natural delta base
                                uploader.add(block, bases[n] if n < len(bases) else None)
                        after = os.stat(item.source, follow_symlinks=False)
                    except OSError as exc:
                        raise BoxError(f"cannot read {item.source}: {exc.strerror or exc}; nothing was committed"
                                       ) from None
                    if (after.st_size, after.st_mtime_ns) != (item.local.size, item.local.mtime_ns) \
                            or size != item.local.size:
                        raise BoxError(f"{item.source} changed while it was read; nothing was committed: "
                                       "put it again once it is written")
                    item.digests = b"".join(digests)
        except BaseException:
            if uploader is not None:
                uploader.pool.shutdown(wait=False, cancel_futures=True)
            raise
        return uploader.finish() if uploader is not None else UploadStats()


def _check_kinds(items: list[PutItem], head: dict[str, Entry], shown: Callable[[str], str]) -> None:
    """Refuse a file where the box has a folder, or a folder where it has a file (as `cp` does)."""
    for item in items:
        at = head.get(item.path)
        if at is not None and (at["kind"] == "dir") != (item.kind == "dir"):
            here, there = ("a folder", "a file") if item.kind == "dir" else ("a file", "a folder")
            raise UsageError(f"{shown(item.path)} is {there} in the box and {here} here ({item.source}): "
                             "remove one of them first; nothing was committed")


def _judge(items: list[PutItem], head: dict[str, Entry]) -> list[ChangeIn]:
    """Set each item's status against `head` and return the changes of the commit, each based on the
    head's revision of its path (so the put overwrites, as `cp` does)."""
    changes: list[ChangeIn] = []
    for item in items:
        at = head.get(item.path)
        local = item.local
        if item.kind == "file":
            same_content = at is not None and at["content_hash"] == content_hash("file", item.digests, None)
            same = same_content and at is not None and at["mode"] == local.mode
        elif item.kind == "link":
            same = at is not None and at["kind"] == "link" and at["target"] == local.target
        else:
            same = at is not None and at["kind"] == "dir"
        item.status = "unchanged" if same else "added" if at is None else "modified"
        if same:
            continue
        changes.append({
            "path": item.path, "op": "put", "kind": item.kind, "parent_rev": int(at["seq"]) if at else 0,
            "size": local.size if item.kind == "file" else 0, "mtime_ns": max(0, local.mtime_ns),
            "mode": local.mode, "blocks": [item.digests[i : i + 32].hex() for i in range(0, len(item.digests), 32)],
            "target": local.target,
        })
    return changes


def _folders(paths: list[str]) -> list[ChangeIn]:
    """New folder entries for `paths` (based on no revision: the commit says which exist already)."""
    return [{"path": p, "op": "put", "kind": "dir", "parent_rev": 0, "size": 0, "mtime_ns": 0, "mode": 0o755,
             "blocks": [], "target": None} for p in paths]


def _message(dest: str, items: list[PutItem]) -> str:
    files = sum(1 for i in items if i.kind == "file" and i.status != "unchanged")
    return f"put {files} file(s) into {dest or 'the box root'}"
