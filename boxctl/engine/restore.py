"""Restore: bring a path back as it was at a commit, as a new commit, or written into another folder
with the same checks a pull makes."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from box_common.paths import (
    InvalidPath,
    is_under,
    normalize_path,
)
from box_common.schemas import ChangeIn, CommitIn, Entry, TreeAnswer
from boxctl.engine.apply import _block_sizes, _swapped, _take
from boxctl.engine.linkcheck import check_link_target
from boxctl.engine.pull import Pull
from boxctl.errors import IntegrityError, NotFound
from boxctl.local.dirfd import SafeRoot
from boxctl.local.durable import fsync_write, write_temp
from boxctl.local.workspace import (
    UnsafePath,
    Workspace,
    make_link,
)
from boxctl.transfer.download import download_blocks


class RestorePreview(TypedDict):
    """`restore --dry-run --json`: into the box (from_seq, changes and the paths by change), or into a
    folder with `--to` (to, files, paths)."""

    restored: str
    seq: int | None
    dry_run: bool
    from_seq: NotRequired[int]
    changes: NotRequired[int]
    added: NotRequired[list[str]]
    modified: NotRequired[list[str]]
    deleted: NotRequired[list[str]]
    to: NotRequired[str]
    files: NotRequired[int]
    paths: NotRequired[list[str]]


class Restore(Pull):
    """History: restoring a path, in the box or into a folder."""

    def restore(self, path: str, at: int | None, when: float | None, to: Path | None,
                cwd: Path | None = None) -> dict[str, Any]:
        """Bring `path` back as it was at commit `at` (or time `when`): as a new commit, or into `to`."""
        prefix, then, wanted = self._restore_source(path, at, when, cwd)
        if to is not None:
            written, refused = self._export(wanted, prefix, to)
            return {"restored": prefix or ".", "seq": then["seq"], "to": str(to), "files": written,
                    "refused": [{"path": p, "reason": r} for p, r in refused]}
        _, changes = self._rewind(prefix, wanted)
        seq = None
        if changes:
            label = prefix or "the box"
            body: CommitIn = {"message": f"restore {label} to commit {then['seq']}",
                              "device": self.config.device_id, "key": secrets.token_urlsafe(16), "changes": changes}
            seq = self.api.commit(self.box_id, body)["seq"]
        pulled = self.pull()
        return {"restored": prefix or ".", "from_seq": then["seq"], "seq": seq, "changes": len(changes),
                "pull": pulled.as_json()}

    def restore_preview(self, path: str, at: int | None, when: float | None, to: Path | None,
                        cwd: Path | None = None) -> RestorePreview:
        """What `restore` would do (`--dry-run`, and the question before `restore .`): the paths it would
        add back, modify and delete in the box, or write into `to`. Nothing is committed or written."""
        prefix, then, wanted = self._restore_source(path, at, when, cwd)
        if to is not None:
            paths = sorted(p for p, e in wanted.items() if e["kind"] != "dir")
            return {"restored": prefix or ".", "seq": then["seq"], "to": str(to), "files": len(paths),
                    "paths": paths, "dry_run": True}
        now, changes = self._rewind(prefix, wanted)
        puts = [c["path"] for c in changes if c["op"] == "put"]
        return {"restored": prefix or ".", "from_seq": then["seq"], "seq": None, "changes": len(changes),
                "dry_run": True, "added": [p for p in puts if p not in now], "modified": [p for p in puts if p in now],
                "deleted": [c["path"] for c in changes if c["op"] == "delete"]}

    def _restore_source(self, path: str, at: int | None, when: float | None,
                        cwd: Path | None) -> tuple[str, TreeAnswer, dict[str, Entry]]:
        """(the box path, the tree as it was, its entries by path); NotFound if nothing was there."""
        prefix = self.box_path(path, cwd)
        then = self.tree(prefix, at, when)
        wanted = {e["path"]: e for e in then["entries"]}
        if not wanted:
            where = f"commit {then['seq']}"
            raise NotFound(f"{prefix or 'the box'} did not exist at {where}; see 'boxctl log {path}'")
        return prefix, then, wanted

    def _rewind(self, prefix: str, wanted: dict[str, Entry]) -> tuple[dict[str, Entry], list[ChangeIn]]:
        """(the head under `prefix`, the changes that make it `wanted` again, each based on its head revision)."""
        now = {e["path"]: e for e in self.tree(prefix)["entries"]}
        changes: list[ChangeIn] = []
        for p, e in wanted.items():
            cur = now.get(p)
            if cur is not None and (cur["kind"], cur["content_hash"], cur["mode"]) == (
                    e["kind"], e["content_hash"], e["mode"]):
                continue
            changes.append({"path": p, "op": "put", "kind": e["kind"], "parent_rev": cur["seq"] if cur else 0,
                            "size": e["size"], "mtime_ns": e["mtime_ns"], "mode": e["mode"], "blocks": e["blocks"],
                            "target": e["target"]})
        for p, cur in now.items():
            if p not in wanted:
                changes.append({"path": p, "op": "delete", "kind": cur["kind"], "parent_rev": cur["seq"]})
        return now, changes

    def _export(self, wanted: dict[str, dict[str, Any]], prefix: str, to: Path) -> tuple[int, list[tuple[str, str]]]:
        """Write a past version into `to` (a folder, or a file name when restoring one file).

        Paths and link targets come from the server: each goes through the checks a pull makes (rule 6),
        so nothing lands outside `to` or through a link; what is refused is returned with the reason.
        """
        single = len(wanted) == 1 and prefix in wanted and wanted[prefix]["kind"] == "file"
        refused: list[tuple[str, str]] = []
        if single and not to.is_dir():  # a file name the user gave: written by that name
            entry = wanted[prefix]
            to.parent.mkdir(parents=True, exist_ok=True)
            self._check_free_space([entry], to.parent, "restore")
            stream = download_blocks(self.api, _block_sizes([entry]), self.threads)
            fsync_write(to.parent, to, _take(stream, len(entry["blocks"]), prefix, int(entry["size"])), entry["mode"],
                        entry["mtime_ns"])
            return 1, refused
        base = prefix.rsplit("/", 1)[-1] if prefix else ""
        to.mkdir(parents=True, exist_ok=True)
        dest_root = Workspace(to)
        targets: dict[str, str] = {}  # box path -> path inside `to`
        rels = {p: (f"{base}/{p[len(prefix) + 1:]}" if prefix and p != prefix else (base if prefix else p))
                for p in wanted}
        links = {rels[p]: e["target"] for p, e in wanted.items() if e["kind"] == "link"}
        for p in sorted(wanted):
            rel = rels[p]
            try:
                if not is_under(p, prefix) or p != normalize_path(p):
                    raise UnsafePath(f"refusing path from the server: {p!r} is not inside {prefix or 'the box'}")
                if wanted[p]["kind"] == "link":
                    check_link_target(rel, wanted[p]["target"], to, links)
                dest_root.safe_path(rel)  # the name checks; the folders are made below, through descriptors
                targets[p] = rel
            except (UnsafePath, InvalidPath) as exc:
                refused.append((p, str(exc)))
        self._check_free_space([wanted[p] for p in targets], to, "restore")  # before any folder is made
        written = 0
        # Every write goes through folders of `to` opened without following links (see boxctl.local.dirfd).
        with SafeRoot(to) as folders:
            for p, rel in sorted(targets.items()):
                try:
                    if wanted[p]["kind"] == "dir":
                        folders.folder(rel, create=True)
                    else:
                        folders.parent(rel, create=True)
                except (UnsafePath, OSError) as exc:
                    refused.append((p, _swapped(rel, exc).message))
                    del targets[p]
            files = [e for p, e in sorted(wanted.items()) if e["kind"] == "file" and p in targets]
            stream = download_blocks(self.api, _block_sizes(files), self.threads)
            for e in files:
                rel = targets[e["path"]]
                chunks = _take(stream, len(e["blocks"]), e["path"], int(e["size"]))
                try:
                    fd, name = folders.parent(rel)
                    folders.verify(rel.rpartition("/")[0])
                except (UnsafePath, OSError) as exc:
                    for _ in chunks:
                        pass  # the stream stays in step with the files
                    refused.append((e["path"], _swapped(rel, exc).message))
                    continue
                temp = None
                try:
                    temp = write_temp(name, chunks, e["mode"], e["mtime_ns"], dir_fd=fd)
                    folders.verify(rel.rpartition("/")[0])  # not moved or swapped while it downloaded
                    os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
                except (IntegrityError, UnsafePath, OSError) as exc:  # this file only: the others go on
                    for _ in chunks:
                        pass
                    if temp is not None:
                        with contextlib.suppress(OSError):
                            os.unlink(temp, dir_fd=fd)
                    refused.append((e["path"], exc.message if isinstance(exc, IntegrityError)
                                    else _swapped(rel, exc).message))
                    continue
                written += 1
            for p, e in wanted.items():
                if e["kind"] == "link" and p in targets:
                    try:
                        fd, name = folders.parent(targets[p])
                        make_link(name, e["target"], dir_fd=fd)
                    except (UnsafePath, OSError) as exc:
                        refused.append((p, _swapped(targets[p], exc).message))
        return written, refused
