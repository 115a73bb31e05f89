"""Writing pulled files so that a crash never leaves half of one: temp file, fsync, rename (rule 4)."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from boxctl.local.workspace import TEMP_PREFIX

AT_FDCWD = -100  # <fcntl.h>: paths relative to the current folder
RENAME_NOREPLACE = 1  # <linux/fs.h>: renameat2 fails with EEXIST instead of replacing the target


def write_temp(final: Path | str, chunks: Iterable[bytes], mode: int, mtime_ns: int, temp: Path | str | None = None,
               sync: bool = True, dir_fd: int | None = None) -> Path:
    """Write `chunks` to a temp file beside `final` (fsynced unless `sync` is False), with mode and mtime.

    A named `temp` survives a failure (the next pull reuses its verified blocks); a random one is
    removed. The caller renames the temp over `final` once its data is on disk. With `dir_fd`, `final`
    and `temp` are names inside that open folder (see boxctl.local.dirfd) and the temp's name is returned.
    """
    keep = temp is not None
    name = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    temp = Path(temp) if temp is not None else (Path(final).parent / name if dir_fd is None else Path(name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if keep else os.O_EXCL)
    fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            # Through the descriptor, not the name: the name may be somebody else's by now.
            os.chmod(out.fileno(), mode & 0o777)
            os.utime(out.fileno(), ns=(mtime_ns, mtime_ns))
            if sync:
                os.fsync(out.fileno())
    except BaseException:
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        raise
    return temp


def fsync_write(root: Path, final: Path | str, chunks: Iterable[bytes], mode: int, mtime_ns: int,
                temp: Path | None = None, dir_fd: int | None = None) -> None:
    """Write `chunks` to a temp file beside `final`, fsync, set mode and mtime, then rename over `final`.

    A reader never sees a half-written file: until the rename, `final` is untouched. With `dir_fd`,
    `final` is a name inside that open folder.
    """
    written = write_temp(final, chunks, mode, mtime_ns, temp, dir_fd=dir_fd)
    try:
        os.replace(written, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(written, dir_fd=dir_fd)
        raise


def rename_noreplace(src: Path | str, dst: Path | str, dir_fd: int | None = None) -> None:
    """Rename `src` (a file, link or folder) to `dst`, raising FileExistsError if `dst` exists: never replaces.

    With `dir_fd`, both are names inside that open folder (see boxctl.local.dirfd). Linux renameat2
    (RENAME_NOREPLACE) does it atomically. Elsewhere, or on a file system without it, a file or link is
    hard-linked to its new name (which fails if the name is taken) and unlinked; a folder, which cannot
    be linked, is renamed after a check that the name is free (a rename replaces only an empty folder,
    so nothing with content can be lost in that short window).
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "renameat2"):
        at = AT_FDCWD if dir_fd is None else dir_fd
        if libc.renameat2(at, os.fsencode(src), at, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = _errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # else: not supported here
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    _rename_noreplace_portable(src, dst, dir_fd)


def _rename_noreplace_portable(src: Path | str, dst: Path | str, dir_fd: int | None = None) -> None:
    """rename_noreplace without renameat2: a link and an unlink, or a check and a rename for a folder."""
    if not stat.S_ISDIR(os.stat(src, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        try:
            os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError as exc:  # a file system without hard links (FAT, some network shares)
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise
        else:
            os.unlink(src, dir_fd=dir_fd)
            return
    try:
        os.stat(dst, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def sync_filesystem(root: Path, fd: int | None = None) -> None:
    """Flush every dirty page of the file system holding `root` (one syncfs instead of many fsyncs);
    `fd`, an open descriptor of `root` (a pull's SafeRoot), saves opening it again."""
    own = fd is None
    if fd is None:
        fd = os.open(root, os.O_RDONLY)
    try:
        libc = _libc()
        if libc is not None and hasattr(libc, "syncfs") and libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        if own:
            os.close(fd)


@functools.cache
def _libc() -> Any:
    """The C library, loaded on first use (a status or a push never needs it, and loading costs startup)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)  # the symbols already in this process: libc among them
        if hasattr(libc, "renameat2"):
            libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return libc
    except (OSError, AttributeError):
        return None
