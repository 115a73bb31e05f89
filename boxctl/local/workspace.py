"""A synced folder on disk: walking it (with .boxignore rules) and safe paths inside it."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from box_common.paths import (
    CONFLICT_SUFFIX_BYTES,
    InvalidPath,
    normalize_path,
    parent_paths,
)
from boxctl.config import BOX_DIR
from boxctl.errors import UsageError

if TYPE_CHECKING:
    import pathspec

IGNORE_FILE = ".boxignore"
TEMP_PREFIX = ".box-tmp-"
IGNORED = "ignored by .boxignore"  # the reason a walk gives for a path the ignore rules leave out
PARTIAL_PREFIX = TEMP_PREFIX + "p"  # a pull's named temp file: kept after a crash so the next pull resumes


@dataclass(slots=True)
class LocalEntry:
    """What one path looks like on disk right now."""

    path: str
    kind: str  # file | dir | link
    size: int
    mtime_ns: int
    inode: int
    mode: int
    target: str | None = None


# (kind, size, mtime_ns, inode, mode, link target) of one path: the shape of the index's stats.
Stat = tuple[str, int, int, int, int, str | None]

# Folders are listed through open descriptors where the platform allows it (Linux, macOS): each folder is
# opened by its name inside its open parent with O_NOFOLLOW, so a folder swapped for a symlink while the
# walk runs is never followed out of the synced folder.
BY_FD = os.scandir in os.supports_fd and os.readlink in os.supports_dir_fd
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)




@dataclass(slots=True)
class _Walk:
    """What a walk found."""

    found: dict[str, Stat] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # folders that could not be listed

    def unlist(self, rel: str, exc: OSError) -> None:
        self.skipped.append((rel, f"cannot list: {exc.strerror}"))
        self.unlisted.append(rel)



class UnsafePath(UsageError):
    """A path that would leave the synced folder or pass through a symlink."""


class Workspace:
    """The files of one synced folder, as the sync engine sees them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ignore = self._load_ignore()
        self.skipped: list[tuple[str, str]] = []
        self.temps: list[str] = []
        self.ignored: list[str] = []  # what the last scan left out by .boxignore (folders end with '/')
        self._limits: tuple[int, int] | None = None  # the file system's name and path limits, once asked
        self.unlisted: list[str] = []  # folders the last scan could not list: their contents are unknown

    def _load_ignore(self) -> pathspec.PathSpec | None:
        try:
            lines = (self.root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {IGNORE_FILE}: {exc}") from None
        import pathspec  # here: most folders have no .boxignore, and the import costs every command time

        return pathspec.GitIgnoreSpec.from_lines(lines)

    def ignore_rules(self) -> list[str]:
        """The patterns of .boxignore in force (comments and blank lines left out)."""
        try:
            lines = (self.root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]

    def is_ignored(self, path: str, is_dir: bool = False) -> bool:
        """True if `path` must never be synced: .box/, our temp files, or a .boxignore match."""
        name = path.rsplit("/", 1)[-1]
        # A .box/ at any depth: a nested one (planted by an editor of a shared folder) never syncs either way.
        if name == BOX_DIR or f"/{BOX_DIR}/" in f"/{path}/" or name.startswith(TEMP_PREFIX):
            return True
        if self.ignore is None:
            return False
        return self.ignore.match_file(path + "/" if is_dir else path)

    def scan(self) -> dict[str, LocalEntry]:
        """Every syncable path under the root, without following symlinks; odd names go to `skipped`."""
        return {path: LocalEntry(path, *found) for path, found in self.scan_stats().items()}

    def scan_stats(self) -> dict[str, Stat]:
        """Like `scan`, as plain tuples shaped like the index's stats, so that a whole unchanged tree
        compares with one tuple equality per path (no object per path: the cost of a no-op status)."""
        walk = _Walk()
        self._walk_path(str(self.root), "", walk)
        found, skipped, self.temps, self.unlisted = walk.found, walk.skipped, walk.temps, walk.unlisted
        # Paths left out by .boxignore travel with the skipped ones.
        self.ignored = [path for path, why in skipped if why == IGNORED]
        self.skipped = [(path, why) for path, why in skipped if why != IGNORED] if self.ignored else skipped
        return found

    def _walk_path(self, where: str, rel: str, walk: _Walk, parent: int | None = None) -> None:
        """Open the folder at `where` (by its last name inside the open folder `parent`, when given) and walk it."""
        if not BY_FD:
            self._walk(where, where, rel, walk)
            return
        try:
            # O_NOFOLLOW: a folder swapped for a symlink since its stat is refused, never followed.
            flags = DIR_FLAGS | (os.O_NOFOLLOW if rel else 0)
            folder = os.open(where if parent is None else where.rsplit("/", 1)[1], flags, dir_fd=parent)
        except OSError as exc:
            if not rel:
                raise UsageError(f"cannot list the synced folder {where}: {exc.strerror}") from None
            if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                walk.unlist(rel, exc)
            return  # otherwise it vanished or was replaced while we looked
        try:
            self._walk(folder, where, rel, walk)
        finally:
            os.close(folder)

    def _walk(self, folder: int | str, where: str, rel: str, walk: _Walk) -> None:
        """Walk one folder, given as an open descriptor (each stat then looks up one name inside it) or
        as a path where descriptors cannot be listed."""
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            if not rel:  # never read as "every file was deleted"
                raise UsageError(f"cannot list the synced folder {where}: {exc.strerror}") from None
            walk.unlist(rel, exc)
            return
        found, skipped = walk.found, walk.skipped
        prefix = f"{rel}/" if rel else ""
        spec = self.ignore
        for entry in entries:
            name = entry.name
            path = prefix + name
            if name[0] == "." and (name.startswith(TEMP_PREFIX) or name == BOX_DIR):
                if name.startswith(TEMP_PREFIX):
                    walk.temps.append(f"{where}/{name}")  # a pull's: in use, or left by one cut off
                elif rel:
                    skipped.append((path, "a .box/ below the synced folder's root is never synced"))
                continue
            try:
                if normalize_path(path) != path:
                    skipped.append((path, "name is not in NFC form"))
                    continue
            except InvalidPath as exc:
                skipped.append((path, str(exc)))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished while we looked
            mode = st.st_mode
            kind = mode & 0o170000
            if kind == stat.S_IFREG:
                if spec is None or not spec.match_file(path):
                    found[path] = ("file", st.st_size, st.st_mtime_ns, st.st_ino, mode & 0o777, None)
                else:
                    skipped.append((path, IGNORED))
            elif kind == stat.S_IFDIR:
                if spec is not None and spec.match_file(path + "/"):
                    skipped.append((path + "/", IGNORED))
                    continue
                found[path] = ("dir", 0, 0, st.st_ino, 0o755, None)
                self._walk_path(f"{where}/{name}", path, walk, folder if isinstance(folder, int) else None)
            elif spec is not None and spec.match_file(path):
                skipped.append((path, IGNORED))
                continue
            elif kind == stat.S_IFLNK:
                try:
                    target = os.readlink(name, dir_fd=folder) if isinstance(folder, int) else os.readlink(entry.path)
                except OSError:
                    continue
                found[path] = ("link", 0, st.st_mtime_ns, st.st_ino, 0o777, target)
            else:
                skipped.append((path, "not a regular file, folder or symlink"))

    def stat(self, path: str) -> LocalEntry | None:
        """The current state of one path (None if absent), never following a final symlink."""
        full = self.root / path
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):  # (a file where a folder of the path would be)
            return None
        if stat.S_ISDIR(st.st_mode):
            return LocalEntry(path, "dir", 0, 0, st.st_ino, 0o755)
        if stat.S_ISLNK(st.st_mode):
            return LocalEntry(path, "link", 0, st.st_mtime_ns, st.st_ino, 0o777, os.readlink(full))
        if stat.S_ISREG(st.st_mode):
            return LocalEntry(path, "file", st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777)
        return None

    def _too_long(self, path: str) -> str | None:
        """Why this file system cannot hold `path` (a name or the whole path over its limits), or None.

        A pull checks first, so that one such entry is listed and skipped instead of failing every pull.
        """
        if self._limits is None:
            try:
                self._limits = (os.pathconf(self.root, "PC_NAME_MAX"), os.pathconf(self.root, "PC_PATH_MAX"))
            except (OSError, ValueError):
                self._limits = (255, 4096)
        name_max, path_max = self._limits
        longest = max(len(part.encode()) for part in path.split("/"))
        if longest > name_max:
            return f"a name in it is longer than this file system allows ({name_max} bytes)"
        # Room in the path for the longest name the client makes beside it: a temp file or a conflicted copy.
        if len(os.fsencode(self.root)) + 1 + len(path.encode()) + CONFLICT_SUFFIX_BYTES >= path_max:
            return f"the path is longer than this file system allows ({path_max} bytes)"
        return None

    def safe_path(self, path: str, create_parents: bool = False, look_at_parents: bool = True) -> Path:
        """The on-disk path of a box path from the network, refusing escapes and symlinked parents.

        Without `look_at_parents`, only the path itself is checked (see `blocking_parent` for the rest).
        """
        try:
            canonical = normalize_path(path)
        except InvalidPath as exc:
            raise UnsafePath(f"refusing path from the server: {exc}") from None
        if canonical != path or self.is_ignored(path):
            raise UnsafePath(f"refusing path from the server: {path!r}")
        too_long = self._too_long(path)
        if too_long:
            raise UnsafePath(f"cannot write {path!r} here: {too_long}; it stays on the server")
        if not look_at_parents:
            return self.root / path
        for parent in parent_paths(path):
            full = self.root / parent
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                if not create_parents:
                    continue
                os.mkdir(full, 0o755)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"refusing to write {path!r}: {parent!r} is not a plain folder")
        return self.root / path


    def blocking_parent(self, path: str) -> str | None:
        """The outermost folder of `path` that is a file or link here (never looked through), or None."""
        for parent in parent_paths(path):
            try:
                st = os.lstat(self.root / parent)
            except FileNotFoundError:
                return None  # nothing deeper exists either
            if not stat.S_ISDIR(st.st_mode):
                return parent
        return None



def link_temp(final: Path | str, target: str, dir_fd: int | None = None) -> Path:
    """Create a symlink to `target` under a temp name beside `final`, to be renamed onto it; its path
    (with `dir_fd`, `final` is a name inside that open folder and the temp's name is returned)."""
    name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    temp = Path(final).parent / name if dir_fd is None else Path(name)
    os.symlink(target, temp, dir_fd=dir_fd)
    return temp


def make_link(final: Path | str, target: str, dir_fd: int | None = None) -> None:
    """Create (or replace) a symlink at `final` pointing to `target`, atomically."""
    temp = link_temp(final, target, dir_fd)
    try:
        os.replace(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def remove_path(full: Path | str, kind: str, dir_fd: int | None = None) -> bool:
    """Remove a file, link or empty folder of that `kind`; False if a folder still holds something, or
    the path is no longer of that kind (a folder that became a file here is a change to keep, not remove).
    Any other failure (a folder it may not write in) raises OSError: the path is not removed, and is not a
    local change either.

    With `dir_fd`, `full` is a name inside that open folder (see boxctl.local.dirfd).
    """
    try:
        is_dir = stat.S_ISDIR(os.stat(full, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        if (kind == "dir") != is_dir:
            return False
        if is_dir:
            os.rmdir(full, dir_fd=dir_fd)
        else:
            os.unlink(full, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True
