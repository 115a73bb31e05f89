"""Writing inside a synced folder through open folder descriptors, so that no swapped folder is followed.

A path checked once can change before it is used: another process of the user (or anyone who can write
in the folder) may swap `sub/` for a symlink to `~/.ssh` while a pull runs, and every later write by
path would go through it (rule 6). A `SafeRoot` opens the synced folder once and each folder below it
name by name with O_NOFOLLOW | O_DIRECTORY, relative to its parent's descriptor; every write then names
only its last component relative to an open folder (openat, renameat, symlinkat, unlinkat). A component
swapped for a symlink or a file at any moment is refused by the kernel (ELOOP, ENOTDIR), never followed.

Opened folders are cached for the whole pull (10,000 small files in a few folders cost a few opens, not
10,000 walks of their paths): `verify` tells whether a cached folder still sits at its path, the check
a pull makes right before a rename, so a folder moved away meanwhile gets nothing new.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from boxctl.local.workspace import LocalEntry, UnsafePath

DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
REFUSED = (errno.ELOOP, errno.ENOTDIR)  # a component is a symlink, or not a folder at all
MAX_OPEN = 128  # folder descriptors kept open at once (far below the usual limit of 1,024 per process)


class SafeRoot:
    """The synced folder at `root`, open for one pull: descriptors of its folders, opened without following links."""

    def __init__(self, root: Path) -> None:
        self.root = root
        fd = os.open(root, DIR_FLAGS)  # the root itself may be reached through links: it is the user's choice
        self._fds: dict[str, int] = {"": fd}
        self._ids: dict[str, tuple[int, int]] = {"": _ident(os.fstat(fd))}
        self._kids: dict[str, int] = {}  # open folders directly below each open folder

    def __enter__(self) -> SafeRoot:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every descriptor this handle opened."""
        fds, self._fds = self._fds, {}
        self._ids, self._kids = {}, {}
        for fd in fds.values():
            os.close(fd)

    @property
    def open_count(self) -> int:
        """How many folder descriptors are open (the tests check that `close` leaves none)."""
        return len(self._fds)

    def folder(self, rel: str, create: bool = False) -> int:
        """The descriptor of folder `rel` (a box path, '' for the root), opened name by name without
        following a link; missing folders are made when `create` is true, else FileNotFoundError.

        Raises UnsafePath if a component is a symlink or not a folder.
        """
        fd = self._fds.get(rel)
        if fd is not None:
            if rel:
                self._fds[rel] = self._fds.pop(rel)  # most recently used last: the first to close is the oldest
            return fd
        head, _, name = rel.rpartition("/")
        parent = self.folder(head, create)
        try:
            try:
                fd = _open_folder(name, parent)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile: opened below like any folder
                    os.mkdir(name, 0o755, dir_fd=parent)
                fd = _open_folder(name, parent)
        except OSError as exc:
            if exc.errno in REFUSED:
                raise UnsafePath(f"refusing to write below {rel!r}: it is not a plain folder") from None
            raise
        ident = _ident(os.fstat(fd))
        if self._ids.setdefault(rel, ident) != ident:  # opened before (closed to save descriptors): not the same
            os.close(fd)
            raise UnsafePath(f"refusing to write below {rel!r}: it was moved or replaced during the pull")
        if len(self._fds) > MAX_OPEN:
            self._close_oldest_leaf()
        self._fds[rel] = fd
        self._kids[head] = self._kids.get(head, 0) + 1
        return fd

    def _close_oldest_leaf(self) -> None:
        """Close the least recently used folder below which none is open. Only leaves are closed, so the
        folders above an open one stay open (`verify` and `folder` never reopen one to reach another), and
        a descriptor just handed out stays valid until the next folder is opened."""
        leaf = next((k for k in self._fds if k and not self._kids.get(k)), None)
        if leaf is None:
            return  # a chain deeper than MAX_OPEN: keep it all
        os.close(self._fds.pop(leaf))  # its identity stays in _ids: a reopening must find the same folder
        head = leaf.rpartition("/")[0]
        self._kids[head] -= 1

    def parent(self, path: str, create: bool = False) -> tuple[int, str]:
        """The descriptor of the folder holding `path`, and the last name of `path`."""
        head, _, name = path.rpartition("/")
        return self.folder(head, create), name

    def verify(self, rel: str) -> None:
        """Raise UnsafePath unless the open folder `rel` and each folder above it still sit at their names
        (not moved away, not swapped for a link), so what is written there lands at its path."""
        parts = rel.split("/") if rel else []
        for depth in range(len(parts)):
            here = "/".join(parts[: depth + 1])
            above = "/".join(parts[:depth])
            try:
                st = os.stat(parts[depth], dir_fd=self._fds[above], follow_symlinks=False)
            except (OSError, KeyError):  # KeyError: `rel` was never opened, or forgotten
                st = None
            if st is None or _ident(st) != self._ids.get(here):
                raise UnsafePath(f"refusing to write below {here!r}: it was moved or replaced during the pull")

    def forget(self, rel: str) -> None:
        """Close the cached descriptors of folder `rel` and those below it (it was removed or moved)."""
        below = f"{rel}/"
        for key in [k for k in self._ids if k and (k == rel or k.startswith(below))]:
            fd = self._fds.pop(key, None)
            if fd is not None:
                os.close(fd)
                head = key.rpartition("/")[0]
                if head in self._kids:
                    self._kids[head] -= 1
            self._ids.pop(key)
            self._kids.pop(key, None)

    def lstat(self, path: str) -> os.stat_result | None:
        """The stat of `path` itself (never following a link), None if it or a folder above is absent.

        Raises UnsafePath if a folder above is a symlink or a file.
        """
        if not path:
            return os.fstat(self._fds[""])
        try:
            fd, name = self.parent(path)
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def entry(self, path: str) -> LocalEntry | None:
        """What is at `path` now, like `Workspace.stat`, looked up through open folders only."""
        st = self.lstat(path)
        if st is None:
            return None
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return LocalEntry(path, "dir", 0, 0, st.st_ino, 0o755)
        if stat.S_ISLNK(mode):
            fd, name = self.parent(path)
            try:
                target = os.readlink(name, dir_fd=fd)
            except FileNotFoundError:
                return None
            return LocalEntry(path, "link", 0, st.st_mtime_ns, st.st_ino, 0o777, target)
        if stat.S_ISREG(mode):
            return LocalEntry(path, "file", st.st_size, st.st_mtime_ns, st.st_ino, mode & 0o777)
        return None


def _open_folder(name: str, parent: int) -> int:
    """Open folder `name` inside `parent`, refusing a link (ELOOP) or a non-folder (ENOTDIR)."""
    try:
        return os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except PermissionError:
        # A folder we may write into but not list: an O_PATH descriptor still serves the *at calls.
        o_path = getattr(os, "O_PATH", 0)
        if not o_path:
            raise
        return os.open(name, o_path | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=parent)


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
