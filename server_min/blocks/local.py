"""The default block store: blocks packed into files in a local folder, written crash-safe.

An upload of many blocks becomes one pack file (temp name, fsync, rename, fsync of the folder),
like restic's packs: 100,000 small files cost a few hundred files on disk, not 100,000 fsyncs.
Page-aligned payloads (the server's upload buffers) are written with O_DIRECT (see direct_io).
The metadata store records where each block lives; a pack no row points to is harmless.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from server_min.blocks.base import BlockUnreadable, Location
from server_min.blocks.direct_io import write_payloads


class LocalBlocks:
    """Pack files under `root/packs/<2 hex>/<id>.pack`, written through temp files under `root/tmp`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.packs = root / "packs"
        self.tmp = root / "tmp"
        self.packs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._synced: set[str] = set()  # packs/<2 hex> folders whose name this process made durable
        self._lock = threading.Lock()

    def drop_unfinished(self) -> None:
        """Drop the temp files of uploads cut off mid-write: nothing points to them."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _pack_path(self, pack: str) -> Path:
        return pack_file(self.packs, pack)

    def forget(self, locations: Sequence[Location]) -> None:
        """Nothing to drop: every read comes from the store itself."""

    def discard(self, locations: Sequence[Location]) -> None:
        """Delete the packs of `locations` (an upload whose metadata could not be written, or was not needed)."""
        for pack in {loc.pack for loc in locations}:
            self._pack_path(pack).unlink(missing_ok=True)

    def put(self, payloads: Sequence[bytes | memoryview]) -> list[Location]:
        """Store `payloads` in one new pack, durably (temp file, fsync, rename, fsync of the folder)."""
        pack = secrets.token_hex(16)
        temp = self.tmp / f"{pack}.part"
        locations: list[Location] = []
        position = 0
        for payload in payloads:
            size = memoryview(payload).nbytes
            locations.append(Location(pack, position, size))
            position += size
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        final = self._pack_path(pack)
        try:
            try:
                write_payloads(fd, payloads)
                os.fsync(fd)
            finally:
                os.close(fd)
            if pack[:2] not in self._synced:
                self._sync_folder(final.parent)
            os.replace(temp, final)
        except BaseException:
            # A full disk (or any failure) leaves nothing behind: the bytes written so far are freed now.
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return locations

    def _sync_folder(self, folder: Path) -> None:
        """Make `folder` (a packs/<2 hex> folder) and its name durable, once per process.

        A new folder's name is durable only once its parent is synced (strict POSIX; ext4 forgives it,
        other file systems may not): else a power cut could take the folder with the packs in it. The
        lock keeps a second writer from renaming into the folder before the first has synced its name.
        """
        with self._lock:
            if folder.name not in self._synced:
                folder.mkdir(exist_ok=True)
                _fsync_dir(self.packs)
                self._synced.add(folder.name)

    def get(self, location: Location) -> bytes:
        """The payload at `location`, or BlockUnreadable when its pack is gone or shorter than recorded."""
        try:
            fd = os.open(self._pack_path(location.pack), os.O_RDONLY)
        except FileNotFoundError:
            raise BlockUnreadable(f"pack {location.pack} is missing") from None
        except OSError as exc:
            raise BlockUnreadable(f"pack {location.pack} cannot be read: {exc.strerror}") from None
        try:
            data = os.pread(fd, location.length, location.offset)
        except OSError as exc:
            raise BlockUnreadable(f"pack {location.pack} cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if len(data) != location.length:
            raise BlockUnreadable(f"pack {location.pack} is shorter than the index says")
        return data


def pack_file(packs: Path, pack: str) -> Path:
    """Where pack `pack` lives under the folder `packs`."""
    return packs / pack[:2] / f"{pack}.pack"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
