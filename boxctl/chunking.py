"""Content-defined chunking (FastCDC, compiled) and SHA-256 block ids, streamed in bounded memory."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyfastcdc.cy import FastCDC

from box_common.content import content_hash


@dataclass(frozen=True, slots=True)
class Block:
    """One chunk of a file: its SHA-256 (raw digest), where it sits, and its bytes."""

    digest: bytes
    offset: int
    data: bytes

    @property
    def sha256(self) -> str:
        return self.digest.hex()


class Chunker:
    """Cuts files the same way on every device of a box (the sizes are fixed per box)."""

    def __init__(self, min_size: int, avg_size: int, max_size: int) -> None:
        self.min_size = min_size
        self.cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size)

    def pieces(self, path: Path | str) -> Iterator[tuple[int, bytes]]:
        """(offset, bytes) of each chunk of the file, not hashed yet (so hashing can run elsewhere)."""
        with os.fdopen(open_regular(path), "rb", buffering=0) as stream:
            size = os.fstat(stream.fileno()).st_size
            if size <= self.min_size:
                # A small file is one block: skip the chunker's set-up cost.
                data = stream.read()
                if data:
                    yield 0, data
                return
            for chunk in self.cdc.cut_stream(stream):
                yield chunk.offset, bytes(chunk.data)

    def blocks(self, path: Path | str) -> Iterator[Block]:
        """The blocks of the file at `path`, in order; memory stays within a few maximum block sizes."""
        return map(hash_piece, self.pieces(path))

    def digests(self, path: Path | str) -> tuple[bytes, int]:
        """The concatenated block digests of a file and its size, without keeping any block."""
        parts: list[bytes] = []
        size = 0
        for block in self.blocks(path):
            parts.append(block.digest)
            size += len(block.data)
        return b"".join(parts), size


def hash_piece(piece: tuple[int, bytes]) -> Block:
    """A chunk as a Block with its SHA-256 (hashlib releases the GIL, so threads hash in parallel)."""
    offset, data = piece
    return Block(hashlib.sha256(data).digest(), offset, data)


def open_regular(path: Path | str) -> int:
    """Open a file to read it, refusing anything but a regular file (never following a final symlink).

    O_NONBLOCK: a file swapped for a FIFO after the scan would otherwise block the open forever; the
    flag changes nothing for a regular file. A FIFO, device or socket raises OSError(EINVAL).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file any more", str(path))
    return fd


def read_small(path: Path | str, limit: int) -> tuple[list[Block], os.stat_result]:
    """The single block of a small file and the file's state once read (read and hashed in one call, for a
    thread pool); comparing that state with the one seen before tells whether the file changed meanwhile.

    At most `limit` bytes are read: a file that grew past it has a new size, which the caller sees.
    """
    fd = open_regular(path)  # os calls: a file object costs more than a small read
    try:
        data = os.read(fd, limit)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return ([hash_piece((0, data))] if data else []), after


__all__ = ["Block", "Chunker", "content_hash", "hash_piece", "open_regular", "read_small"]
