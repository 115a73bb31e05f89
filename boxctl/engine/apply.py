"""Placing a pull: deletes checked right before, folders and links made through open folders, and
files streamed to temps, flushed in batches and renamed into place; a local edit always wins the race."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from box_common.units import format_size
from boxctl.engine.base import EngineBase
from boxctl.engine.conflicts import move_aside
from boxctl.engine.linkcheck import check_link_target
from boxctl.engine.results import PullResult
from boxctl.engine.reuse import LocalBlocks
from boxctl.errors import BoxError, IntegrityError
from boxctl.local import temps as pull_temps
from boxctl.local.dirfd import SafeRoot
from boxctl.local.durable import rename_noreplace, sync_filesystem, write_temp
from boxctl.local.index import IndexEntry, pack_sizes
from boxctl.local.workspace import (
    PARTIAL_PREFIX,
    LocalEntry,
    UnsafePath,
    link_temp,
    remove_path,
)
from boxctl.transfer.download import DamagedBlock, download_blocks

SMALL_FILE = 1 << 20  # pulled files up to this size are flushed in batches
FREE_SPACE_MARGIN = 64 << 20  # a pull leaves at least this much of the disk free
PLACE_TRIES = 5  # a path edited again and again while a pull places its remote version: give up after this
# Errors that stop a whole pull: the disk, not one path (any other OSError refuses that path only).
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


class Apply(EngineBase):
    """Writing what a pull decided onto the disk (rules 3, 4 and 6 of DESIGN.md)."""

    def _move_aside(self, path: str, result: PullResult) -> None:
        """Keep a local path that loses its place to a remote one of another kind, as a conflicted copy."""
        try:
            copy = move_aside(self.root, path, self.config.device_name)  # never onto an existing name
        except OSError as exc:
            _swapped(path, exc)  # a full disk stops the pull; else the write that wanted the path is refused
            return
        result.conflicts.append({"path": path, "copy": copy})

    def _apply_writes(self, folders: SafeRoot, writes: list[dict[str, Any]], result: PullResult,
                      index_puts: list[IndexEntry]) -> None:
        """Create folders and links, then stream every file's blocks into place (temp, fsync, rename)."""
        placed: set[str] = set()
        links = {r["path"]: r["target"] for r in writes if r["kind"] == "link"}
        self._check_free_space(writes)
        for remote in sorted(writes, key=lambda r: (r["kind"] != "dir", r["path"])):
            if remote["kind"] == "link":  # checked before anything is created for it
                try:
                    check_link_target(remote["path"], remote["target"], self.root, links)
                except UnsafePath as exc:  # the entry itself is refused: no later pull writes it either
                    links.pop(remote["path"], None)
                    self._refuse(remote, result, exc)
                    continue
            try:
                if remote["kind"] == "dir":
                    folders.folder(remote["path"], create=True)
                else:
                    folders.parent(remote["path"], create=True)
                placed.add(remote["path"])
            except (UnsafePath, OSError) as exc:
                # Not a plain folder here (a file saved at its name after make_room cleared the way, or a
                # folder swapped for a link), a folder it may not write in, a name this file system refuses
                # (EINVAL): left alone, and asked for again by the next pull, which clears the way anew (a
                # file there is kept as a conflicted copy). The rest of the pull goes on.
                links.pop(remote["path"], None)
                self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
                continue
            if remote["kind"] == "dir":
                self._done(folders, remote, result, index_puts)
        writes = [r for r in writes if r["path"] in placed]
        # Every folder that gets a temp is noted first, so that a pull cut off at any point (SIGKILL, power
        # loss) leaves no temp the next pull does not know of; this one removes what earlier ones left.
        with pull_temps.PullTemps(self.root) as temps:
            leftovers = temps.leftovers()
            temps.note({r["path"].rpartition("/")[0] for r in writes if r["kind"] != "dir"})
            self._write_files(folders, writes, leftovers, result, index_puts)
            temps.clear()  # on an error, the journal stays: the next pull resumes and removes what is left

    @staticmethod
    def _refuse(remote: dict[str, Any], result: PullResult, exc: UnsafePath, held: bool = False) -> None:
        """Note a path left alone; `held` (a folder swapped while the pull ran) makes the next pull ask again."""
        result.refused.append((remote["path"], exc.message))
        if held:
            result.held.append(int(remote["seq"]))

    def _write_files(self, folders: SafeRoot, writes: list[dict[str, Any]], leftovers: list[Path],
                     result: PullResult, index_puts: list[IndexEntry]) -> None:
        """Links, then files: each written to a temp file and renamed into place (see `_place`)."""
        for remote in writes:
            if remote["kind"] == "link":
                try:
                    fd, name = folders.parent(remote["path"])
                    temp = link_temp(name, remote["target"], dir_fd=fd)
                except (UnsafePath, OSError) as exc:
                    self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
                    continue
                self._place(folders, remote, temp.name, result, index_puts)
        files = [r for r in writes if r["kind"] == "file"]
        total = sum(r["size"] for r in files)
        done = 0
        source = LocalBlocks(self.root, self.index.entries(), files)
        # A big file is written under a name made of its content hash: a pull cut off leaves it behind, and
        # the next one reads its verified blocks instead of fetching them again.
        partials = {r["path"]: (self.root / r["path"]).parent / f"{PARTIAL_PREFIX}{r['content_hash'][:24]}"
                    for r in files if r["size"] > SMALL_FILE}
        previous = pull_temps.resume(list(partials.values()), leftovers,
                                     lambda prev: source.add_partial(prev, self.chunker))
        stream = download_blocks(self.api, _block_sizes(files), self.threads, local=source.read)
        # Speed (W5 restore, a clone of many small files): small files are written in batches, temps
        # first, one syncfs for the batch, then the renames, instead of one fsync each. Big files fsync alone.
        batch: list[tuple[dict[str, Any], str, list[int]]] = []
        batch_bytes = 0
        try:
            for remote in files:
                chunks = _take(stream, len(remote["blocks"]), remote["path"], int(remote["size"]))
                sizes: list[int] = []
                small = remote["size"] <= SMALL_FILE
                partial = partials.get(remote["path"])
                try:
                    fd, name = folders.parent(remote["path"])
                    temp = write_temp(name, _counted(chunks, sizes), remote["mode"], remote["mtime_ns"],
                                      partial.name if partial else None, sync=not small, dir_fd=fd).name
                except IntegrityError as exc:  # this file only: every other file of the pull is still written
                    result.damaged.append({"path": remote["path"], "seq": remote["seq"],
                                           "blocks": exc.details.get("blocks", []),
                                           "reason": exc.details.get("reason", exc.message)})
                    continue
                except (UnsafePath, OSError) as exc:  # its folder swapped, removed or not writable
                    for _ in chunks:
                        pass  # the stream stays in step with the files
                    self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
                    continue
                batch.append((remote, temp, sizes))
                batch_bytes += remote["size"]
                if not small or len(batch) >= 2000 or batch_bytes >= 64 << 20:
                    done += self._finish_batch(folders, batch, result, index_puts, sync=any(
                        r["size"] <= SMALL_FILE for r, _, _ in batch))
                    batch, batch_bytes = [], 0
                    self.progress("pull", done, total)
            if batch:
                done += self._finish_batch(folders, batch, result, index_puts, sync=True)
                batch = []
                self.progress("pull", done, total)
        except BaseException:
            # The small files' temps are of no use to a later pull (a big file's partial is: it stays).
            for remote, temp, _ in batch:
                if remote["path"] not in partials:
                    with contextlib.suppress(OSError, UnsafePath):
                        os.unlink(temp, dir_fd=folders.parent(remote["path"])[0])
            raise
        for prev in previous:  # every block of an earlier attempt is in place now
            with contextlib.suppress(OSError):
                prev.unlink()
        result.blocks_reused = source.reused

    def _check_free_space(self, writes: list[dict[str, Any]], where: Path | None = None,
                          what: str = "pull") -> None:
        """Refuse a pull (or a restore --to into `where`) whose files would not fit on that disk, before
        writing any of them.

        Dedup lets a few bytes on the server stand for a huge file (one block repeated), so what counts is
        the logical size the pull would write, with a margin left for the rest of the system; and no file
        is written past the size it declares (`_take`), so the sizes counted here are the most it writes.
        """
        needed = sum(int(r["size"]) for r in writes if r["kind"] == "file")
        if not needed:
            return
        where = where or self.root
        free = shutil.disk_usage(where).free
        if needed + FREE_SPACE_MARGIN > free:
            hint = "pull less ('boxctl pull PATH')" if what == "pull" else "restore less, or elsewhere"
            raise BoxError(f"not enough free space in {where}: this {what} writes {format_size(needed)} and "
                           f"{format_size(free)} is free; free some space, or {hint}")

    def _finish_batch(self, folders: SafeRoot, batch: list[tuple[dict[str, Any], str, list[int]]],
                      result: PullResult, index_puts: list[IndexEntry], sync: bool) -> int:
        """Flush the batch's temp files, then rename each into place (see `_place`); bytes done."""
        if sync:
            sync_filesystem(self.root, folders.folder(""))
        done = 0
        for remote, temp, sizes in batch:
            done += self._place(folders, remote, temp, result, index_puts, pack_sizes(sizes))
        if sync:
            sync_filesystem(self.root, folders.folder(""))  # the renames too, before the index says they happened
        return done

    def _place(self, folders: SafeRoot, remote: dict[str, Any], temp: str, result: PullResult,
               index_puts: list[IndexEntry], sizes: bytes = b"") -> int:
        """Rename `temp` (a name in the folder of the remote version's path) onto its path; its bytes, or 0
        if it was not placed.

        The path is checked right before the rename. If it changed since the pull looked at it (an edit
        saved while the pull ran), the local version is moved aside as a conflicted copy, a new file for
        the next push, and the remote version takes the name (rule 3); if it already holds the remote
        version, it stays. Either way the index gets the remote revision, so the next push goes through.
        If its folder was swapped (for a link, or moved away) meanwhile, nothing is placed: it is refused.
        """
        folder = remote["path"].rpartition("/")[0]
        fd: int | None = None
        try:
            fd, name = folders.parent(remote["path"])
            seen = folders.entry(f"{folder}/{temp}" if folder else temp)  # a rename keeps the stat
            for _ in range(PLACE_TRIES):
                folders.verify(folder)  # still at its path: what lands in it lands inside the synced folder
                if self._still_as_expected(folders, remote):
                    try:
                        if remote.get("expect") is None:
                            rename_noreplace(temp, name, dir_fd=fd)  # a file saved since is never replaced
                        else:
                            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
                    except FileExistsError:
                        continue  # saved right after the check: look again
                    # The stat of the temp, not of the path now: a save right after the rename is an edit to push.
                    self._done(folders, remote, result, index_puts, sizes, seen)
                    return int(remote["size"])
                now = folders.entry(remote["path"])
                if now is not None and self.same_content(now, remote):
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=fd)
                    index_puts.append(self._entry_from_remote(remote, now))
                    return 0
                if now is not None:
                    with contextlib.suppress(FileNotFoundError):
                        copy = move_aside(folders, remote["path"], self.config.device_name)
                        result.conflicts.append({"path": remote["path"], "copy": copy})
                remote["expect"] = None  # moved aside, or deleted meanwhile: the remote version comes (back)
        except (UnsafePath, OSError) as exc:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=fd)  # ours, in the folder it was made in, wherever that is now
            self._refuse(remote, result, _swapped(remote["path"], exc), held=True)
            return 0
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=fd)
        result.kept.append(remote["path"])
        return 0

    def _still_as_expected(self, folders: SafeRoot, remote: dict[str, Any]) -> bool:
        """Right before replacing or deleting a path, check it is still as we saw it (a local edit wins the race)."""
        expected: LocalEntry | None = remote.get("expect")
        now = folders.entry(remote["path"])
        if expected is None:
            return now is None or (now.kind == "dir" and remote["kind"] == "dir")
        return now is not None and (now.kind, now.size, now.mtime_ns, now.inode, now.mode) == (
            expected.kind, expected.size, expected.mtime_ns, expected.inode, expected.mode)

    def _done(self, folders: SafeRoot, remote: dict[str, Any], result: PullResult, index_puts: list[IndexEntry],
              sizes: bytes = b"", local: LocalEntry | None = None) -> None:
        local = local or folders.entry(remote["path"])
        if local is not None:
            index_puts.append(self._entry_from_remote(remote, local, sizes))
            result.written.append(remote["path"])

    def _apply_deletes(self, folders: SafeRoot, deletes: list[dict[str, Any]], result: PullResult,
                       index_dels: list[str]) -> None:
        """Remove what the remote side deleted, each path checked right before: one changed while the pull
        ran is kept, to be pushed as a new file; one whose folder was swapped meanwhile is refused."""
        for remote in sorted(deletes, key=lambda r: r["path"], reverse=True):
            path = remote["path"]
            try:
                fd, name = folders.parent(path)
                folders.verify(path.rpartition("/")[0])
                if self._still_as_expected(folders, remote) and remove_path(name, remote["local_kind"], fd):
                    folders.forget(path)
                    result.deleted.append(path)
                elif folders.entry(path) is None:
                    result.deleted.append(path)  # deleted here as well meanwhile
                else:
                    result.kept.append(path)  # edited since, or a folder that still holds unsynced files
            except FileNotFoundError:
                result.deleted.append(path)  # its folder is gone too
            except UnsafePath as exc:
                self._refuse(remote, result, exc, held=True)  # the index keeps it: the next pull deletes it
                continue
            except OSError as exc:  # in a folder it may not write in: kept, and asked for again next pull
                self._refuse(remote, result, _swapped(path, exc), held=True)
                continue
            index_dels.append(path)
        if deletes:
            sync_filesystem(self.root, folders.folder(""))  # else a power cut could bring back a file the index forgot


def _swapped(path: str, exc: OSError | UnsafePath) -> UnsafePath:
    """The refusal of `path` whose folder was swapped for a link (`exc` is UnsafePath) or removed, or that
    this device cannot write (permission, a name its file system refuses). A full or broken disk is no
    refusal of one path: that error is raised again, and the pull stops."""
    if isinstance(exc, UnsafePath):
        return exc
    if isinstance(exc, FileNotFoundError):
        return UnsafePath(f"refusing to write {path!r}: its folder was removed during the pull")
    if exc.errno in FATAL_ERRNOS:
        raise exc
    return UnsafePath(f"cannot write {path!r} here ({exc.strerror or exc}); the next pull tries again")


def _block_sizes(files: list[dict[str, Any]]) -> Iterator[tuple[str, int]]:
    for remote in files:
        blocks = remote["blocks"]
        each = remote["size"] // max(1, len(blocks))
        for sha in blocks:
            yield sha, each


def _counted(chunks: Iterator[bytes], sizes: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        sizes.append(len(chunk))
        yield chunk


def _take(stream: Iterator[bytes | DamagedBlock], count: int, path: str,
          declared: int | None = None) -> Iterator[bytes]:
    """The next `count` blocks of `stream`, those of file `path`. A damaged one stops the file: the rest of
    its blocks are still taken (the stream stays in step), then IntegrityError names the file.

    With `declared` (the entry's size, which the free-space check counted), bytes past it stop the file the
    same way: a hostile server could otherwise list one small size and fill the disk with repeated blocks.
    """
    damaged: DamagedBlock | _Oversized | None = None
    total = 0
    for _ in range(count):
        chunk = next(stream)
        if isinstance(chunk, DamagedBlock):
            damaged = damaged or chunk
            continue
        total += len(chunk)
        if declared is not None and total > declared and damaged is None:
            damaged = _Oversized(declared)
        if damaged is None:
            yield chunk
    if damaged is not None:
        raise damaged.error(path)


class _Oversized:
    """A file whose blocks run past the size its entry declares: refused like a damaged block."""

    def __init__(self, declared: int) -> None:
        self.declared = declared

    def error(self, path: str) -> IntegrityError:
        reason = f"its blocks hold more than the {self.declared:,} bytes its entry declares"
        return IntegrityError(f"refusing {path!r}: {reason}", blocks=[], reason=reason)
