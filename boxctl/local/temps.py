"""Where a pull writes its temp files (`.box-tmp-*`), so that one cut off leaves none behind for long.

Before a pull writes a temp file, it notes the temp's folder in `.box/temps` and holds a lock
on that file (flock, released by the kernel however the process ends). The next pull lists
those folders, reuses the verified blocks of its own partial downloads and removes every
other temp; status and push, which walk the whole folder anyway, remove the temps they see
unless a pull is running, keeping only the partial downloads a pull will resume.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from boxctl.config import BOX_DIR
from boxctl.local.workspace import PARTIAL_PREFIX, TEMP_PREFIX

JOURNAL = "temps"  # in .box/: box paths of the folders where a pull (maybe cut off) wrote temps, one a line


class PullTemps:
    """The temp files of pulls in one synced folder: held (locked) by the running pull."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / BOX_DIR / JOURNAL
        self.folders: set[str] = set()
        self._fd: int | None = None

    def __enter__(self) -> PullTemps:
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # one pull at a time writes temps in this folder
        self.folders = _read(self._fd)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def leftovers(self) -> list[Path]:
        """Every temp file in the folders noted by earlier pulls (cut off: this one holds the lock)."""
        found = []
        for folder in sorted(self.folders):
            try:
                with os.scandir(self.root / folder if folder else self.root) as listing:
                    found += [Path(e.path) for e in listing if e.name.startswith(TEMP_PREFIX)]
            except (FileNotFoundError, NotADirectoryError):
                continue
        return found

    def note(self, folders: set[str]) -> None:
        """Record `folders` (box paths, '' for the root) before temps are written there."""
        if folders <= self.folders:
            return
        self.folders |= folders
        self._write()

    def clear(self) -> None:
        """Every temp noted is gone: forget the folders."""
        if self.folders:
            self.folders = set()
            self._write()

    def _write(self) -> None:
        assert self._fd is not None
        data = "".join(f"{f or '.'}\n" for f in sorted(self.folders)).encode()  # '.': the root
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


def resume(partials: list[Path], leftovers: list[Path], offer: Callable[[Path], None]) -> list[Path]:
    """Get the earlier attempts at each of the `partials` (a big file's temp name) ready to be read from,
    and remove every other temp in `leftovers`; return the attempts kept, to remove once the pull is done.

    Each attempt holds a start of the file (it is written in order), so the longest holds every block
    the others do: it is kept as `NAME-prev` (offered to `offer` as a source of verified blocks), the
    others are removed, and the new attempt is written under NAME. However often a pull is cut off,
    no file has more than these two.
    """
    stale = set(leftovers)
    kept: list[Path] = []
    for partial in partials:
        prev = partial.with_name(partial.name + "-prev")
        if prev in kept:
            continue  # the same content twice in one folder
        attempts: dict[Path, int] = {}
        for name in (partial, prev, partial.with_name(partial.name + "-prev2")):  # -prev2: of older versions
            stale.discard(name)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(name)
                if stat.S_ISREG(st.st_mode):
                    attempts[name] = st.st_size
        if not attempts:
            continue
        best = max(attempts, key=lambda p: attempts[p])
        for name in attempts:
            if name != best:
                name.unlink()
        if best != prev:
            os.replace(best, prev)
        offer(prev)
        kept.append(prev)
    for temp in stale:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return kept


def resumable(root: Path) -> set[str] | None:
    """Folders (box paths) where a cut-off pull's partial downloads wait to be resumed, or None while
    a pull is running (its temps are in use: leave them all)."""
    import fcntl

    try:
        fd = os.open(root / BOX_DIR / JOURNAL, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return set()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        return _read(fd)
    finally:
        os.close(fd)


def clean(root: Path, temps: list[str]) -> None:
    """Remove the temp files a walk of the folder found (full paths), except partial downloads in the
    folders of a cut-off pull, which the next pull resumes; nothing while a pull is running."""
    if not temps:
        return
    keep = resumable(root)
    if keep is None:
        return
    top = f"{root}/"
    for temp in temps:
        folder = temp[len(top):].rpartition("/")[0] if temp.startswith(top) else None
        if folder in keep and temp.rpartition("/")[2].startswith(PARTIAL_PREFIX):
            continue
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _read(fd: int) -> set[str]:
    size = os.fstat(fd).st_size
    text = os.pread(fd, size, 0).decode("utf-8", "replace") if size else ""
    return {"" if line == "." else line for line in text.split("\n") if line}
