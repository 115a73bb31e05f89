"""Checking a synced folder (`boxctl check`): its index against the folder and the server, and mending it.

Three comparisons, each finding what the others cannot see:

- the index against the folder by stat, as status sees it: files added, changed or deleted here;
- with `read_data`, every synced file's bytes against the index's block list: bit rot, or any change
  that kept a file's size and mtime, which no stat can show;
- the index against the server's head: what a pull would bring (behind), and paths on which the two
  disagree about history the cursor says was applied (out of step: no pull ever fixes those).

`repair` rebuilds a damaged index from the folder and the server. A file is recorded as synced only if
its bytes are the server's; every other path goes through the pull's own rules (a differing file is kept
as a conflicted copy, never overwritten), so no local edit is lost. On a sound index it mends the paths
that are out of step the same way, and with `read_data` puts back the synced version of a damaged file
from the server, keeping the damaged bytes beside it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from box_common.content import content_hash
from boxctl.api import Api
from boxctl.config import BOX_DIR, BoxConfig
from boxctl.engine import Engine, Progress, PullResult
from boxctl.engine.linkcheck import check_link_target
from boxctl.errors import BoxError, IndexDamaged
from boxctl.local.durable import write_temp
from boxctl.local.index import REBUILDING, Index, IndexEntry, pack_sizes, set_aside
from boxctl.local.workspace import LocalEntry, UnsafePath
from boxctl.transfer.download import download_blocks
from boxctl.transfer.pipeline import ordered_map

# Exit codes of `boxctl check` (README): damage is what only `check --repair` fixes; differences are what
# a pull or a push settles.
DAMAGED = 9
DIFFERS = 1


@dataclass
class Rot:
    """A synced file whose bytes no longer match the index's blocks although its stat does."""

    path: str
    size: int
    bad_blocks: int
    moved_to: str | None = None  # set by repair: where the damaged bytes were kept
    error: str | None = None  # set by repair when the synced version could not be put back

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "bad_blocks": self.bad_blocks, "moved_to": self.moved_to,
                "error": self.error}


@dataclass
class OutOfStep:
    """A path on which the index and the server's head disagree, outside what a pull would bring."""

    path: str
    index_rev: int | None
    server_rev: int | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "index_rev": self.index_rev, "server_rev": self.server_rev, "reason": self.reason}


@dataclass
class CheckReport:
    """What `boxctl check` found."""

    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rot: list[Rot] = field(default_factory=list)
    index_problems: list[str] = field(default_factory=list)
    index_damaged: str | None = None  # the index could not even be read
    behind: list[str] = field(default_factory=list)
    out_of_step: list[OutOfStep] = field(default_factory=list)
    cursor: int = 0
    head: int = 0
    read_data: bool = False
    files_read: int = 0
    bytes_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    tree: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # the head, for repair

    @property
    def damaged(self) -> bool:
        return bool(self.rot or self.index_problems or self.index_damaged or self.out_of_step)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.modified or self.deleted or self.behind)

    @property
    def exit_code(self) -> int:
        return DAMAGED if self.damaged else DIFFERS if self.differs else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "clean": self.exit_code == 0, "damaged": self.damaged, "exit_code": self.exit_code,
            "index": {"damaged": self.index_damaged, "problems": self.index_problems},
            "added": self.added, "modified": self.modified, "deleted": self.deleted,
            "read_data": self.read_data, "files_read": self.files_read, "bytes_read": self.bytes_read,
            "bit_rot": [r.as_json() for r in self.rot],
            "cursor": self.cursor, "head": self.head, "behind": self.behind,
            "out_of_step": [o.as_json() for o in self.out_of_step],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


@dataclass
class RepairReport:
    """What `boxctl check --repair` did."""

    rebuilt: bool = False  # the index was damaged and has been made anew
    reason: str | None = None
    moved_to: str | None = None  # where the damaged index was kept
    recorded: int = 0  # files found identical to the server's and recorded as synced
    mended: list[str] = field(default_factory=list)  # out-of-step paths put right (sound index)
    pulled: PullResult | None = None  # what the pull's rules did with every other path
    rot: list[Rot] = field(default_factory=list)
    cursor: int = 0

    @property
    def exit_code(self) -> int:
        return DAMAGED if any(r.error for r in self.rot) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "rebuilt": self.rebuilt, "reason": self.reason, "moved_to": self.moved_to, "recorded": self.recorded,
            "mended": self.mended, "pull": self.pulled.as_json() if self.pulled else None,
            "bit_rot": [r.as_json() for r in self.rot], "cursor": self.cursor, "exit_code": self.exit_code,
        }


def check(engine: Engine, read_data: bool = False) -> CheckReport:
    """Compare the index with the folder (by stat; with `read_data` also every synced file's bytes) and
    with the server's head."""
    report = CheckReport(read_data=read_data, index_problems=engine.index.verify())
    changes = engine.local_changes()  # as status sees them (it also records new stats of unchanged files)
    for change in changes:
        getattr(report, change.status).append(change.path)
    report.skipped = list(engine.workspace.skipped)
    entries = engine.index.entries()
    if read_data:
        changed = {c.path for c in changes}
        _read_data(engine, [e for e in entries.values() if e.kind == "file" and e.path not in changed], report)
    _compare_remote(engine, entries, report)
    return report


def _read_data(engine: Engine, files: list[IndexEntry], report: CheckReport) -> None:
    """Reread `files` and compare each one's blocks with the index's: a file whose bytes differ while its
    stat is still the recorded one is damaged."""
    wanted = {e.path: e for e in files}
    total = sum(e.size for e in files)
    done = 0
    for path, local, digests, _sizes in _hash_files(engine, [(e.path, e.size) for e in files]):
        e = wanted[path]
        done += e.size
        engine.progress("check", done, total)
        if local is None:
            continue  # gone or changed while being read: the next check looks again
        report.files_read += 1
        report.bytes_read += local.size
        if (local.size, local.mtime_ns, local.inode) != (e.size, e.mtime_ns, e.inode) and e.mtime_ns:
            continue  # changed since the stat check: not ours to judge now
        if digests != e.blocks:
            known = set(_split(digests))
            report.rot.append(Rot(path, e.size, sum(1 for d in _split(e.blocks) if d not in known)))


def _hash_files(engine: Engine, files: list[tuple[str, int]]
                ) -> Iterator[tuple[str, LocalEntry | None, bytes, list[int]]]:
    """(path, its state, its block digests, their lengths) of each file, read and hashed on a pool; the state
    is None if the file is gone, not a file, or changed while it was read."""

    def read(item: tuple[str, int]) -> tuple[str, LocalEntry | None, bytes, list[int]]:
        path = item[0]
        before = engine.workspace.stat(path)
        if before is None or before.kind != "file":
            return path, None, b"", []
        digests: list[bytes] = []
        sizes: list[int] = []
        try:
            for block in engine.chunker.blocks(engine.root / path):
                digests.append(block.digest)
                sizes.append(len(block.data))
        except OSError:
            return path, None, b"", []
        after = engine.workspace.stat(path)
        if after is None or (after.size, after.mtime_ns, after.inode) != (before.size, before.mtime_ns, before.inode):
            return path, None, b"", []
        return path, before, b"".join(digests), sizes

    with ThreadPoolExecutor(max_workers=engine.threads, thread_name_prefix="check") as pool:
        yield from ordered_map(read, files, pool, ahead=4 * engine.threads)


def _split(digests: bytes) -> list[bytes]:
    return [digests[i : i + 32] for i in range(0, len(digests), 32)]


def _compare_remote(engine: Engine, entries: dict[str, IndexEntry], report: CheckReport) -> None:
    """What a pull would bring (behind), and the paths on which the index and the head disagree beyond it."""
    report.cursor = cursor = engine.index.cursor
    # The tree first, then the changes after the cursor: a commit landing in between shows in the changes,
    # so every tree entry after the cursor is one a pull would bring.
    tree = engine.tree("")
    report.head = int(tree["seq"])
    report.tree = head = {e["path"]: e for e in tree["entries"] if engine.selected(e["path"])}
    pending, _ = engine.remote_changes(cursor)
    for path, remote in sorted(pending.items()):
        old = entries.get(path)
        if engine.selected(path) and (old.rev != remote["seq"] if old is not None else remote["op"] == "put"):
            report.behind.append(path)
    for path, e in sorted(entries.items()):
        if path in pending or not engine.selected(path):
            continue
        remote = head.get(path)
        if remote is None:
            report.out_of_step.append(OutOfStep(path, e.rev, None, "the server's head does not have it"))
        elif int(remote["seq"]) != e.rev:
            report.out_of_step.append(OutOfStep(path, e.rev, int(remote["seq"]), "at another revision"))
        elif (remote["kind"], remote["content_hash"]) != (e.kind, e.content_hash):
            report.out_of_step.append(OutOfStep(path, e.rev, e.rev, "other content at the same revision"))
    for path, remote in sorted(head.items()):
        if path not in entries and path not in pending and _pullable(engine, remote):
            report.out_of_step.append(OutOfStep(path, None, int(remote["seq"]), "the index does not have it"))


def _pullable(engine: Engine, remote: dict[str, Any]) -> bool:
    """False for a path a pull refuses (unsafe, ignored here, a link leaving the folder): never indexed."""
    try:
        engine.workspace.safe_path(remote["path"])
        if remote["kind"] == "link":
            check_link_target(remote["path"], remote["target"])
    except UnsafePath:
        return False
    return True


# --- repair ---------------------------------------------------------------------------------


def damage_of(path: Path) -> str | None:
    """Why the index at `path` is damaged or missing, or None if it is sound (SQLite's check and each entry's)."""
    if not path.exists():
        return "it is missing"
    try:
        index = Index(path)
    except IndexDamaged as exc:
        return exc.reason
    try:
        problems = index.verify()
    except IndexDamaged as exc:
        return exc.reason
    finally:
        index.close()
    return "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "") or None


def repair(root: Path, config: BoxConfig, api: Api, progress: Progress | None = None,
           threads: int | None = None, read_data: bool = False) -> RepairReport:
    """Rebuild a damaged index from the folder and the server (the damaged one is kept aside); on a sound
    index, mend the paths that are out of step, and with `read_data` put back damaged files."""
    path = root / BOX_DIR / "index.db"
    reason = damage_of(path)
    moved = set_aside(path) if reason is not None else None
    engine = Engine(root, config, api, progress=progress, threads=threads)
    try:
        if moved is not None:
            # Until the rebuild is done the new index says so: cut short (Ctrl-C, the server gone), every
            # command still names the repair instead of trusting a half-filled index.
            engine.index.set_meta(REBUILDING, "1")
            tree = engine.tree("")
            head = {e["path"]: e for e in tree["entries"] if engine.selected(e["path"])}
            report = RepairReport(rebuilt=True, reason=reason, moved_to=str(moved) if moved.exists() else None,
                                  cursor=int(tree["seq"]))
            report.recorded = _record_identical(engine, head)
            report.pulled = engine.adopt(head, report.cursor)
            engine.index.delete_meta(REBUILDING)
            return report
        found = check(engine, read_data)
        report = RepairReport(cursor=found.cursor)
        if found.out_of_step:
            report.mended = paths = [o.path for o in found.out_of_step]
            with engine.index.transaction() as conn:
                engine.index.delete(paths, conn)
            remote = {p: found.tree[p] for p in paths if p in found.tree}
            report.recorded = _record_identical(engine, remote)
            report.pulled = engine.adopt(remote, found.cursor)
        for rot in found.rot:
            _restore(engine, rot)
        report.rot = found.rot
        return report
    finally:
        engine.close()


def _record_identical(engine: Engine, remote: dict[str, dict[str, Any]]) -> int:
    """Record as synced, at the server's revision, every local file whose bytes are those of its entry in
    `remote`; how many. The mode recorded is the server's, so a local chmod still shows as a change."""
    candidates = []
    for path, r in remote.items():
        local = engine.workspace.stat(path)
        if r["kind"] == "file" and local is not None and local.kind == "file" and local.size == r["size"]:
            candidates.append((path, local.size))
    total = sum(size for _, size in candidates)
    done = 0
    found: list[IndexEntry] = []
    for path, local, digests, sizes in _hash_files(engine, candidates):
        done += remote[path]["size"]
        engine.progress("repair", done, total)
        r = remote[path]
        if local is not None and content_hash("file", digests, None) == r["content_hash"]:
            found.append(IndexEntry(path, "file", local.size, local.mtime_ns, local.inode, int(r["mode"]),
                                    int(r["seq"]), r["content_hash"], digests, None, pack_sizes(sizes)))
    with engine.index.transaction() as conn:
        engine.index.put(found, conn)
    return len(found)


def damaged_copy_name(path: str, device: str, when: float | None = None) -> str:
    """`dir/report (damaged copy from laptop 2026-11-25 10-15-00).txt`: where repair keeps a damaged file."""
    folder, _, name = path.rpartition("/")
    stamp = time.strftime("%Y-%m-%d %H-%M-%S", time.localtime(when if when is not None else time.time()))
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    new = f"{stem} (damaged copy from {device} {stamp}){ext}"
    return f"{folder}/{new}" if folder else new


def _restore(engine: Engine, rot: Rot) -> None:
    """Put back the synced version of a damaged file from the server's blocks (each checked against its
    SHA-256), moving the damaged bytes aside first; a file the server cannot give back is left as it is."""
    entry = engine.index.get(rot.path)
    if entry is None or entry.kind != "file":
        rot.error = "no longer in the index"
        return
    full = engine.root / rot.path
    spans = entry.block_spans()
    hashes = ([(digest.hex(), length) for digest, _, length in spans] if spans
              else [(h, entry.size // max(1, len(entry.block_ids))) for h in entry.block_ids])
    try:
        temp = write_temp(full, download_blocks(engine.api, hashes, engine.threads), entry.mode,
                          entry.mtime_ns or time.time_ns())
    except BoxError as exc:
        rot.error = f"the server cannot give back its synced version: {exc.message}"
        return
    now = engine.workspace.stat(rot.path)
    if now is None or ((now.size, now.mtime_ns, now.inode) != (entry.size, entry.mtime_ns, entry.inode) \
            and entry.mtime_ns):
        os.unlink(temp)
        rot.error = "changed while being repaired; check it again"
        return
    rot.moved_to = damaged_copy_name(rot.path, engine.config.device_name)
    os.rename(full, engine.root / rot.moved_to)
    os.replace(temp, full)
    restored = engine.workspace.stat(rot.path)
    if restored is not None:
        with engine.index.transaction() as conn:
            engine.index.put([IndexEntry(entry.path, "file", restored.size, restored.mtime_ns, restored.inode,
                                         entry.mode, entry.rev, entry.content_hash, entry.blocks, None,
                                         entry.sizes)], conn)


__all__ = ["DAMAGED", "DIFFERS", "CheckReport", "OutOfStep", "RepairReport", "Rot", "check", "damage_of",
           "damaged_copy_name", "repair"]
