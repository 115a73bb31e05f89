"""Device block reuse: blocks this device already holds (in synced files, or a pull cut off), read
and verified instead of downloaded."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from boxctl.chunking import Chunker
from boxctl.local.index import IndexEntry


class LocalBlocks:
    """Blocks this device already holds (in synced files, or in a pull that was cut off), to copy not fetch."""

    def __init__(self, root: Path, entries: dict[str, IndexEntry], files: list[dict[str, Any]]) -> None:
        wanted = {bytes.fromhex(h) for r in files for h in r["blocks"]}
        self.where: dict[bytes, list[tuple[Path, int, int, tuple[int, int, int] | None]]] = {}
        self.reused = 0
        self._lock = threading.Lock()
        for e in entries.values():
            if e.kind != "file":
                continue
            # A racily recorded entry (mtime 0) has no stat to compare: its blocks are still offered,
            # since every block read here is checked against its SHA-256 before use.
            stamp = (e.size, e.mtime_ns, e.inode) if e.mtime_ns else None
            for digest, offset, length in e.block_spans():
                if digest in wanted:
                    self.where.setdefault(digest, []).append((root / e.path, offset, length, stamp))

    def add_partial(self, path: Path, chunker: Chunker) -> None:
        """Offer the blocks of a partly written temp file (its last block may be cut short: it won't match)."""
        for block in chunker.blocks(path):
            self.where.setdefault(block.digest, []).append((path, block.offset, len(block.data), None))

    def read(self, sha: str) -> bytes | None:
        """The block's bytes from a local file that still holds it, or None (the caller verifies the hash)."""
        for path, offset, length, stamp in self.where.get(bytes.fromhex(sha), ()):
            try:
                if stamp is not None:
                    st = os.lstat(path)
                    if (st.st_size, st.st_mtime_ns, st.st_ino) != stamp:
                        continue  # changed since it was synced: its blocks may differ
                with open(path, "rb") as f:
                    data = os.pread(f.fileno(), length, offset)
            except OSError:
                continue
            if len(data) == length and hashlib.sha256(data).hexdigest() == sha:
                with self._lock:
                    self.reused += 1
                return data
        return None
