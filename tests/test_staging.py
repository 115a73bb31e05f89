"""boxctl.transfer.staging: parts of a commit go to the server only once their blocks have landed (real server)."""

from __future__ import annotations

import hashlib
from typing import Any

from boxctl.api import Api
from boxctl.chunking import Block
from boxctl.transfer.staging import CommitStager
from boxctl.transfer.upload import BlockUploader
from boxctl.transport import Transport
from tests.conftest import ServerProc


def changes_with_blocks(uploader: BlockUploader, stager: CommitStager, count: int) -> list[dict[str, Any]]:
    """`count` one-block files: each block given to the uploader, then its change to the stager."""
    changes = []
    for i in range(count):
        data = f"staged file {i}\n".encode()
        digest = hashlib.sha256(data).digest()
        uploader.add(Block(digest, 0, data))
        change = {"path": f"f{i:02d}.txt", "op": "put", "kind": "file", "size": len(data), "blocks": [digest.hex()]}
        stager.add(change)
        changes.append(change)
    return changes


def test_parts_wait_for_their_blocks_then_commit_as_one(server: ServerProc) -> None:
    api = Api(Transport(server.url, server.add_user("alice")))
    box_id = api.create_box("docs")["id"]
    uploader = BlockUploader(api, 2)
    stager = CommitStager(api, box_id, uploader, to_json=dict, part=3)
    changes = changes_with_blocks(uploader, stager, 10)
    stager.poll()
    assert stager.sent == []  # no block has been sent yet: nothing may be staged
    uploader.flush()
    uploader.batches[-1].result()
    stager.poll()
    assert len(stager.sent) == 3  # 9 changes ready, in parts of 3; one is left for the commit itself
    uploader.finish()
    stage = stager.wait()
    assert stage is not None
    rest = [c for c in changes if not stager.is_staged(c)]
    assert rest == changes[9:]
    answer = api.transport.post_json(f"/boxes/{box_id}/commits", {"changes": rest, "stage": stage})
    assert answer["changes"] == 10
    assert len(api.tree(box_id)["entries"]) == 10


def test_without_stages_on_the_server_every_change_stays_for_the_commit(server: ServerProc) -> None:
    api = Api(Transport(server.url, server.add_user("alice")))
    uploader = BlockUploader(api, 2)
    # No such box, as a server from before staged commits has no such route: both answer 404.
    stager = CommitStager(api, 987654, uploader, to_json=dict, part=2)
    changes = changes_with_blocks(uploader, stager, 5)
    uploader.finish()
    stager.poll()
    assert len(stager.sent) == 2
    assert stager.wait() is None
    assert not any(stager.is_staged(c) for c in changes)
