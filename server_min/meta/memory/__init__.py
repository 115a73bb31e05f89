"""The in-memory metadata store (tests, and the contract suite's second implementation): see store.py."""

from server_min.meta.memory.commit import MemoryCommitTx
from server_min.meta.memory.store import MemoryMeta

__all__ = ["MemoryCommitTx", "MemoryMeta"]
