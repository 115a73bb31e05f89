"""Side channels: what the time or the shape of an answer would tell about other users' data."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.security.conftest import World


def bytes_written(w: World) -> int:
    """Bytes the server process has written so far (/proc/PID/io: what the time of an answer follows)."""
    assert w.srv.proc is not None
    for line in Path(f"/proc/{w.srv.proc.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


def test_uploading_a_block_someone_else_stores_takes_the_same_path(unchanged: World) -> None:
    """Today's attack: a block that another user stores answered faster (3.1 ms against 4.3 ms), since
    it was not written. Both must be written and fsynced alike; the one already stored is not kept twice."""
    w = unchanged
    theirs = os.urandom(1 << 20)
    assert w.upload("alice", theirs).status_code == 200  # alice's, not in a box mallory reads
    w.settle()
    fresh = os.urandom(1 << 20)
    before = bytes_written(w)
    new = w.upload("mallory", fresh)
    wrote_new = bytes_written(w) - before
    before = bytes_written(w)
    again = w.upload("mallory", theirs)
    wrote_again = bytes_written(w) - before
    assert new.status_code == again.status_code == 200
    assert new.json().keys() == again.json().keys() and new.json()["stored"] == again.json()["stored"]
    assert wrote_new >= 1 << 20 and wrote_again >= 0.9 * wrote_new, (wrote_new, wrote_again)
    w.settle()  # mallory's fresh block is hers to store; the snapshot after checks no pack was added for theirs
    assert w.upload("mallory", theirs).status_code == 200


def test_times_resolve_only_against_visible_commits(world: World) -> None:
    w = world
    note = b"shared note for times " + os.urandom(8).hex().encode()
    assert w.upload("alice", note).status_code == 200
    shared = w.commit("alice", [w.put(f"shared/t-{time.time_ns()}.txt", note)]).json()["seq"]
    time.sleep(0.05)  # a later commit time (the commit's own clock, not an event we could wait on)
    secret = b"private, later " + os.urandom(8).hex().encode()
    assert w.upload("alice", secret).status_code == 200
    hidden = w.commit("alice", [w.put(f"private/t-{time.time_ns()}.txt", secret)]).json()["seq"]
    assert hidden > shared
    for when in (time.time() + 1, time.time() + 3600):
        tree = w.call("GET", f"/v1/boxes/{w.box}/tree", "bob", params={"time": when}).json()
        assert tree["seq"] == shared and tree["head"] == shared, tree  # not the private commit's seq
    beyond = w.call("GET", f"/v1/boxes/{w.box}/tree", "bob", params={"at": hidden})
    assert beyond.status_code == 404 and str(hidden + 0) not in beyond.json()["message"].split("head is")[-1]
    whole = w.call("GET", f"/v1/boxes/{w.box}/tree", "alice", params={"time": time.time() + 1}).json()
    assert whole["seq"] == hidden  # the owner sees every commit


def test_commit_names_that_would_break_pulls_are_refused(unchanged: World) -> None:
    """A name of 244 bytes was accepted, and every member's pull then failed ('File name too long') when a
    conflicted copy added its suffix; so did a path of 4,095 bytes."""
    from box_common.paths import MAX_SYNC_NAME_BYTES, MAX_SYNC_PATH_BYTES

    w = unchanged
    data = b"names test"
    assert w.upload("alice", data).status_code == 200
    w.settle()
    for path in ("n" * 244, "shared/" + "é" * 101, "/".join(["d" * 200] * 5) + "/f" * 20,
                 "shared/" + "/".join(["p" * 100] * 11)):
        resp = w.commit("alice", [w.put(path, data)])
        assert resp.status_code == 422 and resp.json()["error"] == "invalid", (len(path), resp.text)
        assert path[:40] in resp.json()["message"]
    longest = "/".join(["d" * MAX_SYNC_NAME_BYTES] * 4)
    assert len(longest.encode()) <= MAX_SYNC_PATH_BYTES
    ok = w.commit("alice", [w.put(f"shared/{'x' * MAX_SYNC_NAME_BYTES}", data)])
    assert ok.status_code == 200, ok.text
    w.commit("alice", [{"path": f"shared/{'x' * MAX_SYNC_NAME_BYTES}", "op": "delete", "kind": "file",
                        "parent_rev": ok.json()["seq"]}])
    w.settle()
