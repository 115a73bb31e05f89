"""The in-memory block index: where each block rests, who proved to hold it, which were found damaged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from server_min.meta.memory.tables import Tables, under
from server_min.meta.records import StoredBlock


class BlocksMem(Tables):
    """meta.base.BlockIndex in dicts."""

    def block(self, digest: bytes) -> StoredBlock | None:
        return self.blocks.get(digest)

    def stored_blocks(self, digests: Sequence[bytes]) -> dict[bytes, StoredBlock]:
        with self._mutex:
            return {d: self.blocks[d] for d in digests if d in self.blocks}

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        with self._mutex:
            return {d: self.blocks[d].size for d in digests if d in self.blocks}

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        with self._mutex:
            shares = [(b, prefix) for (b, u, prefix) in self.shares if u == user_id]
            return {d for d in digests if (user_id, d) in self.uploads or any(
                box == b and under(path, prefix) for box, path in self.block_paths.get(d, ()) for b, prefix in shares)}

    def damaged_of(self, digests: Sequence[bytes]) -> set[bytes]:
        with self._mutex:
            return {d for d in digests if d in self.damaged}

    def add_blocks(self, user_id: int, new: Sequence[StoredBlock], proved: Iterable[bytes],
                   healed: Sequence[bytes] = ()) -> None:
        with self._mutex:
            for d in healed:
                self.blocks.pop(d, None)
                self.damaged.pop(d, None)
            for block in new:
                self.blocks.setdefault(block.sha256, block)
            self.uploads.update((user_id, d) for d in proved)

    def mark_damaged(self, found: Iterable[tuple[bytes, str]]) -> None:
        with self._mutex:
            for digest, reason in found:
                self.damaged.setdefault(digest, reason)
