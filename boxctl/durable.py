"""Writing pulled files so that a crash never leaves half of one: temp file, fsync, rename (rule 4).

A big file's fsync would otherwise wait for all of its data to reach the disk at the very end. While
it is written, each few MiB are handed to the disk at once (Linux sync_file_range, the way
PostgreSQL's checkpointer spreads its flushes), so the writeback runs beside the download and the
final fsync only waits for the tail.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from boxctl.workspace import TEMP_PREFIX

WRITEBACK_EVERY = 8 << 20  # bytes written between two early writeback requests
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the dirty pages in the range, do not wait


def write_temp(final: Path, chunks: Iterable[bytes], mode: int, mtime_ns: int, temp: Path | None = None,
               sync: bool = True) -> Path:
    """Write `chunks` to a temp file beside `final` (fsynced unless `sync` is False), with mode and mtime.

    A named `temp` survives a failure (the next pull reuses its verified blocks); a random one is
    removed. The caller renames the temp over `final` once its data is on disk.
    """
    keep = temp is not None
    temp = temp or final.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if keep else os.O_EXCL)
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            written = flushed = 0
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
                if sync and written - flushed >= WRITEBACK_EVERY:
                    out.flush()
                    start_writeback(out.fileno(), flushed, written - flushed)
                    flushed = written
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.chmod(temp, mode & 0o777)
        os.utime(temp, ns=(mtime_ns, mtime_ns))
    except BaseException:
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise
    return temp


def fsync_write(root: Path, final: Path, chunks: Iterable[bytes], mode: int, mtime_ns: int,
                temp: Path | None = None) -> None:
    """Write `chunks` to a temp file beside `final`, fsync, set mode and mtime, then rename over `final`.

    A reader never sees a half-written file: until the rename, `final` is untouched.
    """
    os.replace(write_temp(final, chunks, mode, mtime_ns, temp), final)


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing `length` bytes at `offset` of `fd` to disk, without waiting.

    Only a head start: durability still comes from the fsync that follows. False where the system
    has no sync_file_range (nothing happens then).
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "sync_file_range"):
        return False
    return libc.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0


def sync_filesystem(root: Path) -> None:
    """Flush every dirty page of the file system holding `root` (one syncfs instead of many fsyncs)."""
    fd = os.open(root, os.O_RDONLY)
    try:
        libc = _libc()
        if libc is not None and hasattr(libc, "syncfs") and libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc() -> Any:
    """The C library, loaded on first use (a status or a push never needs it, and loading costs startup)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)  # the symbols already in this process: libc among them
        if hasattr(libc, "sync_file_range"):  # off_t is 64-bit: a bare int would go as a 32-bit C int
            libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        return libc
    except (OSError, AttributeError):
        return None
