"""A synced folder on disk: walking it (with .boxignore rules) and safe paths inside it."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from box_common.paths import (
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

if TYPE_CHECKING:
    import pathspec

IGNORE_FILE = ".boxignore"
TEMP_PREFIX = ".box-tmp-"
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


class UnsafePath(UsageError):
    """A path that would leave the synced folder or pass through a symlink."""


class Workspace:
    """The files of one synced folder, as the sync engine sees them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ignore = self._load_ignore()
        self.skipped: list[tuple[str, str]] = []
        self.temps: list[str] = []

    def _load_ignore(self) -> pathspec.PathSpec | None:
        try:
            lines = (self.root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {IGNORE_FILE}: {exc}") from None
        import pathspec  # here: most folders have no .boxignore, and the import costs every command time

        return pathspec.GitIgnoreSpec.from_lines(lines)

    def is_ignored(self, path: str, is_dir: bool = False) -> bool:
        """True if `path` must never be synced: .box/, our temp files, or a .boxignore match."""
        name = path.rsplit("/", 1)[-1]
        if path == BOX_DIR or path.startswith(BOX_DIR + "/") or name.startswith(TEMP_PREFIX):
            return True
        if self.ignore is None:
            return False
        return self.ignore.match_file(path + "/" if is_dir else path)

    def scan(self) -> dict[str, LocalEntry]:
        """Every syncable path under the root, without following symlinks; odd names go to `skipped`."""
        found: dict[str, LocalEntry] = {}
        self.skipped = []
        self.temps = []
        self._walk(str(self.root), "", found)
        return found

    def _walk(self, folder: str, rel: str, found: dict[str, LocalEntry], depth: int = 1) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            self.skipped.append((rel or ".", f"cannot list: {exc.strerror}"))
            return
        prefix = f"{rel}/" if rel else ""
        # One regex over the whole folder's names instead of checks per name: in the usual folder
        # every name is plain ASCII, and only odd folders pay for the full path check.
        names = "\n".join(e.name for e in entries)
        all_plain = (depth < MAX_DEPTH and len(prefix.encode()) + MAX_NAME_BYTES < MAX_PATH_BYTES
                     and all_plain_names(names))
        spec = self.ignore
        at_root = not rel
        for entry in entries:
            name = entry.name
            path = prefix + name
            if name.startswith(TEMP_PREFIX):
                if not name.startswith(PARTIAL_PREFIX):
                    self.temps.append(entry.path)  # left by a transfer that was cut off
                continue
            if at_root and name == BOX_DIR:
                continue
            if not all_plain:
                try:
                    if normalize_path(path) != path:
                        self.skipped.append((path, "name is not in NFC form"))
                        continue
                except InvalidPath as exc:
                    self.skipped.append((path, str(exc)))
                    continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished while we looked
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if spec is not None and spec.match_file(path + "/"):
                    continue
                found[path] = LocalEntry(path, "dir", 0, 0, st.st_ino, 0o755)
                self._walk(entry.path, path, found, depth + 1)
            elif spec is not None and spec.match_file(path):
                continue
            elif stat.S_ISREG(mode):
                found[path] = LocalEntry(path, "file", st.st_size, st.st_mtime_ns, st.st_ino, mode & 0o777)
            elif stat.S_ISLNK(mode):
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                found[path] = LocalEntry(path, "link", 0, st.st_mtime_ns, st.st_ino, 0o777, target)
            else:
                self.skipped.append((path, "not a regular file, folder or symlink"))

    def stat(self, path: str) -> LocalEntry | None:
        """The current state of one path (None if absent), never following a final symlink."""
        full = self.root / path
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return LocalEntry(path, "dir", 0, 0, st.st_ino, 0o755)
        if stat.S_ISLNK(st.st_mode):
            return LocalEntry(path, "link", 0, st.st_mtime_ns, st.st_ino, 0o777, os.readlink(full))
        if stat.S_ISREG(st.st_mode):
            return LocalEntry(path, "file", st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode & 0o777)
        return None

    def safe_path(self, path: str, create_parents: bool = False) -> Path:
        """The on-disk path of a box path from the network, refusing escapes and symlinked parents."""
        try:
            canonical = normalize_path(path)
        except InvalidPath as exc:
            raise UnsafePath(f"refusing path from the server: {exc}") from None
        if canonical != path or self.is_ignored(path):
            raise UnsafePath(f"refusing path from the server: {path!r}")
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


def make_link(final: Path, target: str) -> None:
    """Create (or replace) a symlink at `final` pointing to `target`, atomically."""
    temp = final.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    os.symlink(target, temp)
    try:
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def remove_path(full: Path, kind: str) -> bool:
    """Remove a file, link or empty folder; False if a folder still holds something."""
    try:
        if kind == "dir" and full.is_dir() and not full.is_symlink():
            os.rmdir(full)
        else:
            os.unlink(full)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True

