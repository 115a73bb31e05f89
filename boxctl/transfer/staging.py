"""Staged commits: a large push sends its changes in parts while later blocks still upload.

The server checks each part as a commit would and keeps it out of sight; the final commit names
the stage and applies every part at once, so the push stays one atomic commit however many files
it holds, and the server's checking overlaps the upload instead of following it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from box_common.schemas import ChangeIn
from boxctl.api import Api
from boxctl.errors import NotFound
from boxctl.transfer.upload import BlockUploader

STAGE_PART = 5_000  # changes per request: small enough that little is left for the final commit


class CommitStager:
    """Collects the changes of a push; sends those whose blocks are all uploaded, a part at a time.

    `add` each change once its blocks were given to the uploader and `poll` now and then; once every
    change was added, `wait` for the stage id (None if nothing was staged): the changes not staged
    (`is_staged` is False) go in the final commit itself. Against a server without stages, nothing
    is staged and the commit carries every change, as before.
    """

    def __init__(self, api: Api, box_id: int, uploader: BlockUploader,
                 to_json: Callable[[Any], ChangeIn], part: int = STAGE_PART) -> None:
        self.api = api
        self.box_id = box_id
        self.uploader = uploader
        self.to_json = to_json
        self.part = part
        self.waiting: deque[tuple[int, Any]] = deque()  # (uploader position after its blocks, change)
        self.ready: list[Any] = []
        self.staged: set[int] = set()  # id() of every change the server has staged
        self.stage: int | None = None
        self.unsupported = False
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage")  # parts go in order
        self.sent: list[Future[None]] = []

    def add(self, change: Any) -> None:
        """A change whose blocks have all been given to the uploader."""
        self.waiting.append((self.uploader.position(), change))

    def poll(self) -> None:
        """Send a part if enough changes have all their blocks on the server."""
        done = self.uploader.uploaded_before()
        while self.waiting and self.waiting[0][0] < done:
            self.ready.append(self.waiting.popleft()[1])
        while len(self.ready) >= self.part:
            part, self.ready = self.ready[: self.part], self.ready[self.part :]
            self.sent.append(self.pool.submit(self._send, part))

    def _send(self, part: list[Any]) -> None:
        if self.unsupported:
            return
        changes = [self.to_json(c) for c in part]
        if self.stage is None:
            try:
                self.stage = self.api.new_stage(self.box_id)
            except NotFound:
                self.unsupported = True  # a server from before staged commits: all goes in the commit itself
                return
        self.api.stage(self.box_id, self.stage, changes)
        self.staged.update(id(c) for c in part)

    def wait(self) -> int | None:
        """Wait for every part; the stage id for the commit (None if no part was staged).

        After this, `is_staged` tells which changes the final commit must not list again.
        """
        try:
            for future in self.sent:
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.stage if self.staged else None

    def is_staged(self, change: Any) -> bool:
        """True if `change` reached the server in a part (call after `wait`)."""
        return id(change) in self.staged

    def abandon(self) -> None:
        """Stop sending parts (after an error); the server drops an uncommitted stage after a day."""
        self.pool.shutdown(wait=False, cancel_futures=True)
