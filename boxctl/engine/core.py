"""The engine: one object per synced folder that holds every sync rule (see the package's modules).

The engine compares three states of every path: the disk now (workspace), the disk at the
last sync (index), and the server (journal entries after the cursor). Push sends local changes
as one atomic commit that names the revision each change was based on; pull applies remote
changes without ever overwriting a local edit (rules 3 and 4 of DESIGN.md).
"""

from __future__ import annotations

from pathlib import Path

from boxctl.engine.push import Push
from boxctl.engine.restore import Restore
from boxctl.local.index import Index

INDEX_FILE = "index.db"


class Engine(Push, Restore):
    """Sync rules for one synced folder: status and push (Push), pull and restore (Restore)."""


def create_index(box_dir: Path) -> None:
    """Make the empty index of a new synced folder (init and clone)."""
    Index(box_dir / INDEX_FILE).close()
