"""A metadata store in memory: for tests, and the plainest reading of the meta.base contract.

Every method takes one mutex for its reads and writes. A commit transaction holds its box's own
lock (never a global one), as a store of many writers must; its writes keep an undo list, replayed
if the transaction fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from server_min.meta.base import Fault
from server_min.meta.memory.accounts import AccountsMem
from server_min.meta.memory.blocks import BlocksMem
from server_min.meta.memory.commit import MemoryCommitTx
from server_min.meta.memory.folders import FoldersMem
from server_min.meta.memory.journal import JournalMem


class MemoryMeta(AccountsMem, BlocksMem, JournalMem, FoldersMem):
    """meta.base.MetaStore in dicts."""

    errors: tuple[type[BaseException], ...] = ()

    def fault(self, exc: BaseException) -> Fault | None:
        return None

    def close(self) -> None:
        return None

    @contextmanager
    def commit_tx(self, box_id: int) -> Iterator[MemoryCommitTx]:
        with self._box_locks[box_id]:
            tx = MemoryCommitTx(self, box_id)
            try:
                yield tx
            except BaseException:
                with self._mutex:
                    for undo in reversed(tx.undo):
                        undo()
                raise


__all__ = ["MemoryMeta"]
