"""The state every part of the engine shares: the folder, its index and workspace, the API client,
and the small rules they all use (selection, box paths, content comparison)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from box_common.paths import (
    InvalidPath,
    is_under,
    normalize_prefix,
)
from box_common.schemas import LogAnswer, TreeAnswer
from boxctl.api import Api
from boxctl.chunking import Chunker, content_hash
from boxctl.config import BoxConfig, new_folder_id
from boxctl.engine.repair import RepairResult, repair_blocks
from boxctl.engine.results import Progress, PullResult, _no_progress
from boxctl.errors import AuthError, BoxError, UsageError
from boxctl.local.index import Index, IndexEntry
from boxctl.local.workspace import (
    LocalEntry,
    Workspace,
)
from boxctl.transfer.upload import default_jobs
from boxctl.transport import Transport


class EngineBase:
    """What every part of the engine holds for one synced folder; Engine (core.py) adds the rules."""

    def __init__(self, root: Path, config: BoxConfig, api: Api | Transport, progress: Progress | None = None,
                 threads: int | None = None, delta: bool = True) -> None:
        self.root = root
        self.config = config
        self.api = api if isinstance(api, Api) else Api(api)
        self.index = Index(root / ".box" / "index.db")
        self.workspace = Workspace(root)
        self.chunker = Chunker(config.min_size, config.avg_size, config.max_size)
        self.progress = progress or _no_progress
        # `threads` (--jobs) sets both: reading, hashing and downloads use that many threads, and uploads
        # keep that many batches in flight; by default one per core (see default_jobs).
        self.threads = threads or default_jobs()
        self.uploads = self.threads
        self.delta = delta
        self._hashes: dict[tuple[str, int, int, int], str] = {}  # see _file_hash
        if not config.folder:  # a folder made before folders had ids gets its own now
            config.folder = new_folder_id()
            with contextlib.suppress(OSError):
                config.save(root)

    def close(self) -> None:
        self.index.close()

    @property
    def transport(self) -> Transport:
        """The transport under the API client (settable: a test swaps in a fake server this way)."""
        return self.api.transport

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self.api = Api(transport)

    @property
    def box_id(self) -> int:
        return self.config.box_id

    def check_can_push(self) -> None:
        """Refuse a push from a viewer before anything is uploaded (the server refuses the commit anyway)."""
        info = self.api.box(self.box_id)
        if info.get("role") not in ("owner", "editor"):
            where = f" (folder {info['prefix']!r})" if info.get("prefix") else ""
            raise AuthError(f"you have {info.get('role')} access to {self.config.owner}/{self.config.box_name}"
                            f"{where}: you can pull, but pushing needs editor access; nothing was sent")

    def selected(self, path: str) -> bool:
        """True if `path` is kept on this device (selective sync keeps only some folders or files)."""
        only = self.config.only
        return not only or any(is_under(path, prefix) for prefix in only)

    def new_root(self, path: str) -> str | None:
        """For a path outside the selection, the folder (or file) to add to it so that it syncs;
        None for a folder that only exists here to hold selected paths."""
        if self.selected(path):
            return None
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            head = "/".join(parts[:depth])
            if not any(is_under(prefix, head) for prefix in self.config.only):
                return head
        return None

    def box_path(self, path: str, cwd: Path | None = None) -> str:
        """A user-given path (relative to `cwd`, default the current folder) as a box path ('' for the root)."""
        given = Path(path)
        full = given if given.is_absolute() else (cwd or Path.cwd()) / given
        try:
            rel = os.path.relpath(os.path.abspath(full), self.root)
        except ValueError:
            raise UsageError(f"{path} is not inside {self.root}") from None
        if rel == "." or rel == "":
            return ""
        if rel.startswith(".."):
            raise UsageError(f"{path} is not inside the synced folder {self.root}")
        try:
            return normalize_prefix(rel.replace(os.sep, "/"))
        except InvalidPath as exc:
            raise UsageError(str(exc)) from None

    def tree(self, prefix: str, at: int | None = None, when: float | None = None) -> TreeAnswer:
        """The box (or folder `prefix`) as of commit `at`, time `when`, or now."""
        return self.api.tree(self.box_id, prefix, at, when)

    def log(self, path: str | None, limit: int, cwd: Path | None = None) -> LogAnswer:
        """Commits newest first, or the revisions of one path."""
        if path:
            path = self.box_path(path, cwd)
        return self.api.log(self.box_id, path or None, limit)

    def repair_blocks(self) -> RepairResult:
        """Offer the server every block of the indexed files again (see boxctl.engine.repair)."""
        return repair_blocks(self.root, self.index, self.chunker, self.api, self.uploads)

    def _ack(self, cursor: int) -> None:
        """Tell the server how far this device has applied the journal (shown by 'boxctl devices')."""
        with contextlib.suppress(BoxError):
            self.api.ack(self.box_id, self.config.device_id, cursor, self.config.folder)

    def same_content(self, local: LocalEntry, remote: dict[str, Any]) -> bool:
        """True if the local path holds exactly the remote entry (kind, target, or mode and content)."""
        if local.kind != remote["kind"]:
            return False
        if local.kind == "dir":
            return True
        if local.kind == "link":
            return local.target == remote["target"]
        if local.size != remote["size"] or local.mode != remote["mode"]:
            return False
        return self._file_hash(local) == remote["content_hash"]

    def _file_hash(self, local: LocalEntry) -> str:
        """Content hash of a local file, computed once per state of the file during a pull."""
        key = (local.path, local.size, local.mtime_ns, local.inode)
        cached = self._hashes.get(key)
        if cached is None:
            digests, _ = self.chunker.digests(self.root / local.path)
            cached = self._hashes[key] = content_hash("file", digests, None)
        return cached

    def _entry_from_remote(self, remote: dict[str, Any], local: LocalEntry, sizes: bytes = b"") -> IndexEntry:
        return IndexEntry(remote["path"], remote["kind"], local.size, local.mtime_ns, local.inode, local.mode,
                          int(remote["seq"]), remote["content_hash"],
                          b"".join(bytes.fromhex(h) for h in remote["blocks"]), remote["target"], sizes)

    if TYPE_CHECKING:  # defined by Pull, which every Engine has
        def pull(self, paths: list[str] | None = None, cwd: Path | None = None) -> PullResult: ...
