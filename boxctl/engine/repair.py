"""`boxctl push --repair-blocks`: offer the server again every block of this folder's synced files.

A normal push skips blocks of committed versions (the server has them, so it never asks). When the
server lost or damaged some, this asks it about every indexed block; it reports the ones it lacks
(a damaged block counts as missing), and those are read from the files here, checked, and sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from boxctl.api import Api
from boxctl.chunking import Chunker
from boxctl.local.index import Index
from boxctl.transfer.upload import BlockUploader


@dataclass
class RepairResult:
    """What a repair found and sent."""

    blocks_checked: int = 0
    blocks_missing: int = 0
    blocks_sent: int = 0
    bytes_sent: int = 0
    unavailable: list[str] = field(default_factory=list)  # files that no longer hold a block the server lacks

    def as_json(self) -> dict[str, object]:
        return {"blocks_checked": self.blocks_checked, "blocks_missing": self.blocks_missing,
                "blocks_sent": self.blocks_sent, "bytes_sent": self.bytes_sent, "unavailable": self.unavailable}


def repair_blocks(root: Path, index: Index, chunker: Chunker, api: Api, threads: int) -> RepairResult:
    """Send the server every block of the indexed files that it reports missing; see the module doc."""
    files = [e for e in index.entries().values() if e.kind == "file" and e.blocks]
    wanted = sorted({h for e in files for h in e.block_ids})
    result = RepairResult(blocks_checked=len(wanted))
    missing = api.missing(wanted) if wanted else set()
    result.blocks_missing = len(missing)
    if not missing:
        return result
    uploader = BlockUploader(api, threads, delta=False)
    found: set[str] = set()
    try:
        for entry in files:
            lacking = missing.intersection(entry.block_ids)
            if not lacking or lacking <= found:
                continue
            try:
                for block in chunker.blocks(root / entry.path):
                    if block.sha256 in lacking:  # the chunker hashed it: what is sent is what was asked for
                        found.add(block.sha256)
                        uploader.add(block)
            except OSError:
                pass
            if not lacking <= found:
                result.unavailable.append(entry.path)
    finally:
        stats = uploader.finish()
    result.blocks_sent, result.bytes_sent = stats.blocks_sent, stats.bytes_sent
    return result
