"""Writing an upload's payloads to a pack file with O_DIRECT, past the page cache.

A speed trick kept for the workloads W1 first push and W7 uploads (server CPU and time): the page
cache would cost a copy and a fresh page per 4 KiB of every pack, and the fsync that follows must
write the data out anyway. It works together with the upload buffers of server_min.api.bodies:
they are page-aligned, and the service packs the payloads tight in place, so neighbouring payloads
join into one aligned run of memory that goes to disk in whole pages. Anything else (unaligned
memory or length, a file system that refuses O_DIRECT, another platform) is written as usual.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Sequence

DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere every write goes through the page cache
ALIGN = 4096  # O_DIRECT wants memory, file position and length in whole (logical) blocks: pages are safe


def write_payloads(fd: int, payloads: Sequence[bytes | memoryview]) -> int:
    """Write `payloads` one after the other from the start of the empty file `fd`; the bytes written."""
    written = 0
    for run in _runs(payloads):
        written = _write(fd, run, written)
    return written


def _runs(payloads: Sequence[bytes | memoryview]) -> list[memoryview]:
    """`payloads` as byte views, neighbours in one buffer joined into one view."""
    runs: list[memoryview] = []
    ends: list[int] = []  # per run: where it ends in memory, or -1 if unknown
    for payload in payloads:
        view = memoryview(payload).cast("B")
        start = _address(view)
        if runs and start >= 0 and ends[-1] == start and runs[-1].obj is view.obj:
            base = memoryview(view.obj).cast("B")  # type: ignore[arg-type]
            first = _address(runs[-1]) - _address(base)
            runs[-1] = base[first : first + runs[-1].nbytes + view.nbytes]
            ends[-1] = start + view.nbytes
        else:
            runs.append(view)
            ends.append(start + view.nbytes if start >= 0 else -1)
    return runs


def _write(fd: int, data: memoryview, position: int) -> int:
    """Write all of `data` at `position` (where the file ends); return the new end.

    Page-aligned memory at a page-aligned file position goes straight to disk, whole pages at a time;
    the rest, or everything where the file system refuses O_DIRECT, is written as usual.
    """
    done = 0
    direct = len(data) - len(data) % ALIGN
    if DIRECT and direct and position % ALIGN == 0 and _address(data) % ALIGN == 0 and _set_direct(fd, True):
        try:
            while done < direct:
                done += os.write(fd, data[done:direct])
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        finally:
            _set_direct(fd, False)
    while done < len(data):
        done += os.write(fd, data[done:])
    return position + done


def _address(data: memoryview) -> int:
    """Where `data` starts in memory, or -1 when that cannot be known (read-only or empty buffers)."""
    if data.readonly or not data.nbytes:
        return -1
    anchor = ctypes.c_char.from_buffer(data)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for `fd`; False when the file system does not support it."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | DIRECT if on else flags & ~DIRECT)
    except OSError:
        return False
    return True
