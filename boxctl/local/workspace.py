"""A synced folder on disk: walking it (with .boxignore rules) and safe paths inside it."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from box_common.paths import (
    CONFLICT_SUFFIX_BYTES,
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    InvalidPath,
    all_plain_names,
    normalize_path,
    parent_paths,
)
from boxctl.config import BOX_DIR
from boxctl.errors import UsageError
from boxctl.local.forked import Forked, ForkFailed, can_fork

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

# Folders are listed through open descriptors where the platform allows it (Linux, macOS).
BY_FD = os.scandir in os.supports_fd and os.readlink in os.supports_dir_fd
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


# What a walk (or one share of it) found: paths and stats, skipped paths with why, temp files, unlisted folders.
WalkPart = tuple[dict[str, Stat], list[tuple[str, str]], list[str], list[str]]
Folder = tuple[str, str, int]  # (path on disk, path in the box, depth) of a folder still to walk


@dataclass(slots=True)
class _Walk:
    """What a walk found, and the folders it was told to note rather than enter."""

    found: dict[str, Stat] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # folders that could not be listed
    defer: list[Folder] | None = None

    def unlist(self, rel: str, exc: OSError) -> None:
        self.skipped.append((rel, f"cannot list: {exc.strerror}"))
        self.unlisted.append(rel)

    def as_part(self) -> WalkPart:
        return self.found, self.skipped, self.temps, self.unlisted

    def add(self, part: WalkPart) -> None:
        found, skipped, temps, unlisted = part
        self.found.update(found)
        self.skipped += skipped
        self.temps += temps
        self.unlisted += unlisted


class PendingScan:
    """A walk shared out among forked children: `result()` waits for them and puts the parts together."""

    def __init__(self, workspace: Workspace, walk: _Walk, own: list[Folder],
                 children: list[tuple[Forked, list[Folder]]]) -> None:
        self.workspace, self.walk, self.own, self.children = workspace, walk, own, children

    def result(self) -> WalkPart:
        """What the whole walk found, the paths it skipped with why, the temp files it saw and the
        folders it could not list."""
        walk = self.walk
        walk.add(self.workspace._walk_share(self.own))
        for child, share in self.children:
            try:
                walk.add(child.result())
            except ForkFailed:
                walk.add(self.workspace._walk_share(share))  # walk that share here instead
        return walk.as_part()


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

    def scan_stats(self, workers: int = 1, started: PendingScan | None = None) -> dict[str, Stat]:
        """Like `scan`, as plain tuples shaped like the index's stats, so that a whole unchanged tree
        compares with one tuple equality per path (no object per path: the cost of a no-op status).

        With `workers` > 1 (worth it for a big tree) the walk is shared out among that many processes;
        `started` is such a walk begun earlier (see `start_scan`), to collect instead of walking again.
        """
        if started is None and workers > 1 and can_fork():
            started = self.start_scan(workers, keep_share=True)
        if started is not None:
            found, skipped, self.temps, self.unlisted = started.result()
        else:
            walk = _Walk()
            self._walk_path(str(self.root), "", walk, 1)
            found, skipped, self.temps, self.unlisted = walk.as_part()
        # Paths left out by .boxignore travel with the skipped ones, through the forked walk too (which
        # sends copies: the reason is compared by value).
        self.ignored = [path for path, why in skipped if why == IGNORED]
        self.skipped = [(path, why) for path, why in skipped if why != IGNORED] if self.ignored else skipped
        return found

    def start_scan(self, workers: int, keep_share: bool = False) -> PendingScan:
        """Start a walk shared out among `workers` forked children (the caller must check `can_fork`).

        The top levels are walked here until there are folders enough to share out; each share is then
        walked in a child, the walk being mostly one stat system call per path, where threads would
        only queue on the interpreter lock (the workload: W5 no-op status). With `keep_share` the first
        share is left to walk here, when the result is collected.
        """
        walk = _Walk()
        folders: list[Folder] = [(str(self.root), "", 1)]
        for _ in range(3):
            walk.defer = []
            for where, rel, depth in folders:
                self._walk_path(where, rel, walk, depth)
            folders, walk.defer = walk.defer, None
            if len(folders) >= 2 * workers:
                break
        shares = [folders[i::workers] for i in range(workers)]
        own = shares.pop(0) if keep_share else []
        children = [(Forked(functools.partial(self._walk_share, share)), share) for share in shares if share]
        return PendingScan(self, walk, own, children)

    def _walk_share(self, share: list[Folder]) -> WalkPart:
        walk = _Walk()
        for where, rel, depth in share:
            self._walk_path(where, rel, walk, depth)
        return walk.as_part()

    def _walk_path(self, where: str, rel: str, walk: _Walk, depth: int, parent: int | None = None) -> None:
        """Open the folder at `where` (by its last name inside the open folder `parent`, when given) and walk it."""
        if not BY_FD:
            self._walk(where, where, rel, walk, depth)
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
            self._walk(folder, where, rel, walk, depth)
        finally:
            os.close(folder)

    def _walk(self, folder: int | str, where: str, rel: str, walk: _Walk, depth: int) -> None:
        """Walk one folder, given as an open descriptor (each stat then looks up one name, not the
        whole path, which counts on a big tree: W5 no-op status) or as a path where descriptors cannot be
        listed."""
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
        # One regex over the whole folder's names instead of checks per name: in the usual folder
        # every name is plain ASCII, and only odd folders pay for the full path check.
        names = "\n".join(e.name for e in entries)
        all_plain = (depth < MAX_DEPTH and len(prefix.encode()) + MAX_NAME_BYTES < MAX_PATH_BYTES
                     and all_plain_names(names))
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
            if not all_plain:
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
                if walk.defer is not None:
                    walk.defer.append((f"{where}/{name}", path, depth + 1))
                else:
                    self._walk_path(f"{where}/{name}", path, walk, depth + 1,
                                    folder if isinstance(folder, int) else None)
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
