"""The default block store: blocks packed into files in a local folder, written crash-safe.

An upload of many blocks becomes one pack file (temp name, fsync, rename, fsync of the folder),
like restic's packs: 100,000 small files cost a few hundred files on disk, not 100,000 fsyncs.
The metadata store records where each block lives; a pack no row points to is harmless.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path


class LocalBlocks:
    """Pack files under `root/packs/<2 hex>/<id>.pack`; temp files under `root/tmp` are dropped at start."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.packs = root / "packs"
        self.tmp = root / "tmp"
        self.packs.mkdir(parents=True, exist_ok=True)
        # An upload cut off mid-write leaves only a temp file: nothing points to it, so drop it.
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _pack_path(self, pack: str) -> Path:
        return self.packs / pack[:2] / f"{pack}.pack"

    def write_pack(self, payloads: Sequence[bytes | memoryview]) -> tuple[str, list[int]]:
        """Store `payloads` in one new pack, durably; return the pack id and each payload's offset."""
        pack = secrets.token_hex(16)
        temp = self.tmp / f"{pack}.part"
        offsets: list[int] = []
        position = 0
        with open(temp, "wb") as out:
            for payload in payloads:
                offsets.append(position)
                out.write(payload)
                position += len(payload)
            out.flush()
            os.fsync(out.fileno())
        final = self._pack_path(pack)
        final.parent.mkdir(exist_ok=True)
        os.replace(temp, final)
        _fsync_dir(final.parent)
        return pack, offsets

    def read(self, pack: str, offset: int, length: int) -> bytes:
        """The `length` bytes at `offset` of `pack`."""
        fd = os.open(self._pack_path(pack), os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise OSError(f"pack {pack} is shorter than the index says")
        return data


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
