"""The MetaStore contract (server_min/meta/base.py), run on every implementation: users, tokens and
devices, boxes and members, the block index, commits all-or-nothing with conflicts, one seq after another
per box under concurrent commits, paging, snapshots, history, stages, links."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from server_min.blocks.base import Location
from server_min.meta.base import AlreadyExists, MetaStore
from server_min.meta.records import NewEntry, StoredBlock

SIZES = (256 << 10, 1 << 20, 4 << 20)


def digest(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest()


def put(path: str, *blocks: bytes, size: int = 10, kind: str = "file") -> NewEntry:
    return NewEntry(path, "put", kind, size, 1, 0o644, b"".join(blocks), None)


def delete(path: str) -> NewEntry:
    return NewEntry(path, "delete", "file", 0, 0, 0, b"", None)


def stored(d: bytes, size: int = 10, pack: str = "p", offset: int = 0) -> StoredBlock:
    return StoredBlock(d, size, 0, Location(pack, offset, size))


def commit(meta: MetaStore, box: int, user: int, entries: list[NewEntry], device: int | None = None,
           message: str = "m") -> int:
    with meta.commit_tx(box) as tx:
        return tx.append(user, device, message, entries).seq


@pytest.fixture
def alice(meta: MetaStore) -> int:
    return meta.add_user("alice", "hash-a")


def test_users_and_tokens(meta: MetaStore, alice: int) -> None:
    user = meta.user_by_name("alice")
    assert user is not None and user.id == alice and meta.user(alice) == user and user.password_hash is None
    assert meta.user_by_name("nobody") is None
    owner = meta.token("hash-a")
    assert owner is not None and (owner.user_id, owner.name, owner.revoked, owner.device_id) == (alice, "alice",
                                                                                                False, None)
    assert meta.token("other") is None
    with pytest.raises(AlreadyExists):
        meta.add_user("alice", "hash-b")
    assert meta.token("hash-b") is None  # the failed insert left nothing behind
    meta.set_password(alice, "argon-hash")
    meta.add_token(alice, "hash-login")
    assert meta.user(alice).password_hash == "argon-hash"  # type: ignore[union-attr]
    assert meta.token("hash-login").user_id == alice  # type: ignore[union-attr]


def test_devices_and_cursors(meta: MetaStore, alice: int) -> None:
    dev = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    assert meta.device(dev).name == "laptop"  # type: ignore[union-attr]
    assert [d.id for d in meta.devices(alice)] == [dev]
    owner = meta.token("hash-laptop")
    assert owner is not None and (owner.user_id, owner.device_id, owner.revoked) == (alice, dev, False)
    box = meta.create_box(alice, "docs", SIZES)
    meta.touch_device(dev, box, 5)
    meta.touch_device(dev, box, 3)  # a cursor never moves back
    (cursor,) = meta.device_cursors(dev)
    assert (cursor.box_id, cursor.box, cursor.cursor, cursor.folder) == (box, "docs", 5, "")


def test_each_synced_folder_of_a_device_keeps_its_own_cursor(meta: MetaStore, alice: int) -> None:
    dev = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    box = meta.create_box(alice, "docs", SIZES)
    meta.touch_device(dev, box, 4)  # a client that does not name its folder
    meta.touch_device(dev, box, 7, "documents")
    meta.touch_device(dev, box, 2, "second-copy")
    meta.touch_device(dev, box, 1, "second-copy")  # never back, per folder
    meta.touch_device(dev)  # seen, no cursor
    # The unnamed cursor is dropped once a folder names itself: it was that folder, or one gone since.
    assert [(c.box_id, c.folder, c.cursor) for c in meta.device_cursors(dev)] == [
        (box, "documents", 7), (box, "second-copy", 2)]


def test_revoking_a_device_revokes_its_token_only(meta: MetaStore, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    laptop = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    desk = meta.add_device(alice, "desk", "desktop", "hash-desk")
    meta.revoke_device(bob, laptop)  # not bob's device: nothing happens
    assert not meta.token("hash-laptop").revoked  # type: ignore[union-attr]
    meta.revoke_device(alice, laptop)
    assert meta.token("hash-laptop").revoked  # type: ignore[union-attr]
    assert not meta.token("hash-desk").revoked and not meta.token("hash-a").revoked  # type: ignore[union-attr]
    assert meta.device(laptop).revoked and not meta.device(desk).revoked  # type: ignore[union-attr]


def test_boxes_and_members(meta: MetaStore, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    box = meta.create_box(alice, "docs", SIZES)
    found = meta.box(box)
    assert found is not None and (found.name, found.owner, found.head, found.owner_id) == ("docs", "alice", 0, alice)
    assert (found.min_size, found.avg_size, found.max_size) == SIZES
    assert meta.box_by_name(alice, "docs") == found and meta.box_by_name(bob, "docs") is None
    assert [(m.prefix, m.role) for m in meta.memberships(box, alice)] == [("", "owner")]
    assert meta.memberships(box, bob) == []
    assert [m.box.id for m in meta.boxes_of(alice)] == [box] and meta.boxes_of(bob) == []
    with pytest.raises(AlreadyExists):
        meta.create_box(alice, "docs", SIZES)
    assert meta.box(9999) is None and meta.head(9999) == 0
    assert meta.put_member(box, bob, "dir", "viewer") is True
    assert meta.put_member(box, bob, "dir", "editor") is False  # a new role, the same share
    assert [(m.name, m.prefix, m.role) for m in meta.members(box)] == [("alice", "", "owner"), ("bob", "dir", "editor")]
    assert [(m.box.id, m.role, m.prefix) for m in meta.boxes_of(bob)] == [(box, "editor", "dir")]
    assert meta.remove_members(box, alice, None) == 0  # never the owner
    assert meta.remove_members(box, bob, "other") == 0
    assert meta.remove_members(box, bob, None) == 1 and meta.memberships(box, bob) == []


def test_blocks_uploads_and_readability(meta: MetaStore, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    d1, d2, d3 = digest(1), digest(2), digest(3)
    meta.add_blocks(bob, [stored(d1, 10, "pack1", 0), stored(d2, 20, "pack1", 10)], [d1, d2])
    assert set(meta.stored_blocks([d1, d2, d3])) == {d1, d2}
    assert meta.block(d2) == stored(d2, 20, "pack1", 10) and meta.block(d3) is None
    assert meta.block_sizes([d1, d2, d3]) == {d1: 10, d2: 20}
    assert meta.readable_blocks(bob, [d1, d2]) == {d1, d2}
    assert meta.readable_blocks(alice, [d1, d2]) == set()  # stored, but not hers
    # Alice proves she holds d1 (the store kept its one copy): readable for her now, its home unchanged.
    meta.add_blocks(alice, [stored(d1, 10, "other-pack", 0)], [d1])
    assert meta.block(d1).location.pack == "pack1"  # type: ignore[union-attr]
    assert meta.readable_blocks(alice, [d1, d2]) == {d1}
    # Bob commits d2 into a box, under a folder: alice reads it through the box, or through that folder only.
    shared = meta.create_box(bob, "shared", SIZES)
    commit(meta, shared, bob, [put("in/x", d2, size=20)])
    assert meta.readable_blocks(alice, [d2]) == set()
    meta.put_member(shared, alice, "elsewhere", "viewer")
    assert meta.readable_blocks(alice, [d2]) == set()
    meta.put_member(shared, alice, "in", "viewer")
    assert meta.readable_blocks(alice, [d1, d2, d3]) == {d1, d2}


def test_damaged_blocks_and_healing(meta: MetaStore, alice: int) -> None:
    d1, d2 = digest(1), digest(2)
    meta.add_blocks(alice, [stored(d1, pack="old"), stored(d2)], [d1, d2])
    assert meta.damaged_of([d1, d2]) == set()
    meta.mark_damaged([(d1, "pack old is missing")])
    assert meta.damaged_of([d1, d2]) == {d1}
    meta.add_blocks(alice, [stored(d1, pack="fresh")], [d1], healed=[d1])
    assert meta.damaged_of([d1]) == set() and meta.block(d1).location.pack == "fresh"  # type: ignore[union-attr]


def test_many_blocks(meta: MetaStore, alice: int) -> None:
    digests = [digest(i) for i in range(1207)]  # past any batch size
    meta.add_blocks(alice, [stored(d, 1, "p", i) for i, d in enumerate(digests)], digests)
    assert len(meta.stored_blocks(digests)) == len(digests)
    assert meta.readable_blocks(alice, digests) == set(digests)


def test_commit_moves_head_and_files(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    d1 = digest(1)
    assert commit(meta, box, alice, [put("a", d1), put("b/c", d1)]) == 1
    assert commit(meta, box, alice, [delete("a"), put("d", d1)]) == 2
    assert meta.head(box) == meta.box(box).head == 2  # type: ignore[union-attr]
    with meta.commit_tx(box) as tx:
        heads = tx.heads_of(["a", "b/c", "d", "never"])
        assert tx.head() == 2
        assert tx.present_kinds(["a", "b/c", "d"]) == {"b/c": "file", "d": "file"}
        assert tx.holding(["", "b", "d", "x"]) == {"", "b"} and tx.holding(["", "b"], deeper=True) == {""}
        assert tx.present_under("b") == ["b/c"]
    assert {p: (h.rev, h.present) for p, h in heads.items()} == {"a": (2, False), "b/c": (1, True), "d": (2, True)}


def test_a_failed_commit_leaves_nothing(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("a", digest(1))])
    with pytest.raises(RuntimeError), meta.commit_tx(box) as tx:
        tx.append(alice, None, "doomed", [put("b", digest(2)), delete("a")])
        raise RuntimeError("the server died mid-commit")
    assert meta.head(box) == 1
    assert [e.path for e in meta.tree(box, 1, "")] == ["a"]
    assert meta.changes(box, 0, 100)[1] == 1 and len(meta.commits(box, 10, None)) == 1
    with meta.commit_tx(box) as tx:
        assert set(tx.heads_of(["a", "b"])) == {"a"}
    assert commit(meta, box, alice, [put("c", digest(3))]) == 2  # the seq it did not take is taken now


def test_tree_at_every_seq(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    d1, d2 = digest(1), digest(2)
    commit(meta, box, alice, [put("a", d1), put("dir/x", d1), put("dir2/y", d1), put("dirz", d1)])
    commit(meta, box, alice, [put("a", d2), delete("dir/x")])
    commit(meta, box, alice, [put("dir/x", d2)])

    def tree(seq: int, prefix: str = "") -> dict[str, tuple[int, bytes]]:
        return {e.path: (e.seq, e.blocks) for e in meta.tree(box, seq, prefix)}

    assert tree(0) == {}
    assert tree(1) == {"a": (1, d1), "dir/x": (1, d1), "dir2/y": (1, d1), "dirz": (1, d1)}
    assert tree(2) == {"a": (2, d2), "dir2/y": (1, d1), "dirz": (1, d1)}
    assert tree(3) == {"a": (2, d2), "dir/x": (3, d2), "dir2/y": (1, d1), "dirz": (1, d1)}
    assert tree(3, "dir") == {"dir/x": (3, d2)}  # not dir2/ nor dirz
    assert tree(1, "a") == {"a": (1, d1)}
    assert [e.path for e in meta.current_under(box, "")] == ["a", "dir/x", "dir2/y", "dirz"]
    assert meta.current(box, "a").seq == 2 and meta.current(box, "gone") is None  # type: ignore[union-attr]
    assert (meta.path_state(box, "dir"), meta.path_state(box, "a"), meta.path_state(box, "no")) == ("dir", "file", None)


def test_changes_are_paged_by_whole_commits(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put(f"one/{i}", digest(i)) for i in range(3)])
    commit(meta, box, alice, [put(f"two/{i}", digest(i)) for i in range(3)])
    commit(meta, box, alice, [put("three", digest(0))])
    entries, upto = meta.changes(box, 0, 4)
    assert upto == 1 and len(entries) == 3  # the second commit would not fit: never half of it
    entries, upto = meta.changes(box, 1, 4)
    assert upto == 3 and [e.seq for e in entries] == [2, 2, 2, 3]
    entries, upto = meta.changes(box, 0, 1)
    assert upto == 1 and len(entries) == 3  # at least one whole commit, even over the limit
    assert meta.changes(box, 3, 100) == ([], 3)


def test_history_time_and_counts(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    laptop = meta.add_device(alice, "laptop", "laptop", "hash-laptop")
    desk = meta.add_device(alice, "desk", "desktop", "hash-desk")
    start = time.time()
    commit(meta, box, alice, [put("f", digest(1)), put("g", digest(1))], device=laptop, message="one")
    commit(meta, box, alice, [delete("f")], device=desk, message="two")
    history = meta.path_history(box, "f", 10)
    assert [(r.entry.seq, r.entry.op, r.commit.device, r.commit.message) for r in history] == [
        (2, "delete", "desk", "two"), (1, "put", "laptop", "one")]
    assert [c.seq for c in meta.commits(box, 10, None)] == [2, 1]
    assert [(c.seq, c.user, c.changes) for c in meta.commits(box, 10, 2)] == [(1, "alice", 2)]
    assert [e.path for e in meta.commit_paths(box, 1, 10)] == ["f", "g"]
    assert meta.seq_at(box, start - 1) == 0 and meta.seq_at(box, time.time() + 1) == 2
    assert meta.present_before(box, 2, ["f", "g", "h"]) == {"f", "g"}
    assert meta.present_before(box, 1, ["f", "g"]) == set() and meta.present_before(box, 3, ["f", "g"]) == {"g"}
    assert meta.present_before(box, 2, []) == set()
    assert meta.count_after(box, 0) == 3
    assert meta.count_after(box, 1) == 1  # every change after the cursor, whichever device made it
    assert meta.count_after(box, 2) == 0


def test_folder_views(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("in/a", digest(1)), put("out", digest(1))])
    commit(meta, box, alice, [put("out", digest(2))])
    commit(meta, box, alice, [put("in/b", digest(2)), put("in2/c", digest(2))])
    assert meta.head_under(box, "in") == 3 and meta.head_under(box, "none") == 0
    assert meta.last_seq_under(box, "in", 0) == 3 and meta.last_seq_under(box, "in", 3) is None
    assert meta.count_under(box, "in", 0) == 2 and meta.count_under(box, "in", 1) == 1
    assert [c.seq for c in meta.commits_under(box, "in", 10, None)] == [3, 1]
    assert [c.seq for c in meta.commits_under(box, "in", 10, 3)] == [1]
    paths, total = meta.commit_paths_under(box, 3, "in", 10)
    assert [e.path for e in paths] == ["in/b"] and total == 1


def test_concurrent_commits_to_one_box_are_serialised(meta: MetaStore, alice: int) -> None:
    """Each commit reads the head and takes the next seq inside its transaction: never the same twice."""
    box = meta.create_box(alice, "docs", SIZES)
    other = meta.create_box(alice, "other", SIZES)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                with meta.commit_tx(box if n % 2 == 0 else other) as tx:
                    head = tx.head()
                    time.sleep(0.001)  # widen the window a lost update would need
                    assert tx.append(alice, None, "m", [put(f"w{n}/{i}", digest(i))]).seq == head + 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert meta.head(box) == 30 and meta.head(other) == 30
    assert sorted(c.seq for c in meta.commits(box, 100, None)) == list(range(1, 31))


def test_commit_by_key(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    with meta.commit_tx(box) as tx:
        done = tx.append(alice, None, "m", [put("a", digest(1))], key="key-0001")
    assert meta.commit_by_key(box, "key-0001") == done and meta.commit_by_key(box, "other") is None


def test_staged_commit_applies_every_change_and_drops_the_stage(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("gone", digest(0))])
    stage = meta.create_stage(box, alice)
    many = [put(f"f{i:05d}", digest(i), digest(i + 1), size=20) for i in range(1200)]
    with meta.commit_tx(box) as tx:
        found = tx.stage(stage)
        assert found is not None and (found.box_id, found.user_id) == (box, alice)
        assert tx.add_staged(stage, many[:100], [0] * 100) == 100
        assert tx.add_staged(stage, many, [0] * len(many)) == len(many)  # staged again: replaced
        tx.add_staged(stage, [delete("gone")], [1])
        tx.add_stage_folders(stage, {"": True})
        assert tx.stage_folders(stage) == {"": True}
        assert tx.staged_kinds(stage, ["gone", "f00001", "x"]) == {"gone": ("delete", "file"),
                                                                   "f00001": ("put", "file")}
        assert tx.staged_conflicts(stage) == [] and tx.staged_outside(stage, "dir")
        done = tx.append_staged(stage, alice, None, "m")
    assert (done.seq, done.changes) == (2, len(many) + 1)
    assert [e.path for e in meta.tree(box, 2, "")] == [e.path for e in many]
    with meta.commit_tx(box) as tx:
        assert tx.stage(stage) is None


def test_a_path_staged_again_keeps_its_last_change(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    bob = meta.add_user("bob", "hash-b")
    meta.put_member(box, bob, "", "viewer")
    stage = meta.create_stage(box, alice)
    with meta.commit_tx(box) as tx:
        tx.add_staged(stage, [put("x", digest(900))], [0])
        tx.add_staged(stage, [put("x", digest(901), digest(902)), put("y", digest(903))], [0, 0])
        tx.add_staged(stage, [put("y", digest(904))], [0])  # a retried part, newer content
        tx.append_staged(stage, alice, None, "m")
    assert {e.path: e.blocks for e in meta.tree(box, 1, "")} == {"x": digest(901) + digest(902), "y": digest(904)}
    # bob reads blocks through paths of the box: only those a version of a path held
    assert meta.readable_blocks(bob, [digest(n) for n in range(900, 905)]) == {digest(901), digest(902), digest(904)}


def test_staged_conflicts_follow_the_commit_rules(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    commit(meta, box, alice, [put("kept", digest(1)), put("deleted", digest(1))])
    commit(meta, box, alice, [delete("deleted")])
    stage = meta.create_stage(box, alice)
    with meta.commit_tx(box) as tx:
        tx.add_staged(stage, [put("kept", digest(2))], [1])
        tx.add_staged(stage, [put("new", digest(2))], [0])
        tx.add_staged(stage, [put("deleted", digest(2))], [0])  # re-creating a deleted path from nothing is fine
        assert tx.staged_conflicts(stage) == []
        tx.add_staged(stage, [put("kept", digest(3))], [0])  # based on nothing, but kept exists
        tx.add_staged(stage, [delete("never")], [0])  # deleting what is not there
        conflicts = tx.staged_conflicts(stage)
    assert [(c.path, c.head_rev, c.present) for c in conflicts] == [("kept", 1, True), ("never", 0, False)]


def test_a_failed_stage_write_is_rolled_back(meta: MetaStore, alice: int) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    stage = meta.create_stage(box, alice)
    with meta.commit_tx(box) as tx:
        tx.add_staged(stage, [put("a", digest(1))], [0])
    with pytest.raises(RuntimeError), meta.commit_tx(box) as tx:
        tx.add_staged(stage, [put("b", digest(2))], [0])
        raise RuntimeError("refused")
    with meta.commit_tx(box) as tx:
        assert tx.staged_under(stage, "", -1) == [] or [p for p, _, _ in tx.staged_under(stage, "")] == []
        assert tx.staged_kinds(stage, ["a", "b"]) == {"a": ("put", "file")}


def test_a_stage_expires_after_a_day(meta: MetaStore, alice: int, monkeypatch: pytest.MonkeyPatch) -> None:
    box = meta.create_box(alice, "docs", SIZES)
    old = meta.create_stage(box, alice)
    with meta.commit_tx(box) as tx:
        tx.add_staged(old, [put("a", digest(1))], [0])
    later = time.time() + 25 * 3600
    monkeypatch.setattr(time, "time", lambda: later)
    fresh = meta.create_stage(box, alice)  # making a stage drops the expired ones
    assert fresh != old
    with meta.commit_tx(box) as tx:
        assert tx.stage(old) is None and tx.stage(fresh) is not None


def test_links(meta: MetaStore, alice: int) -> None:
    bob = meta.add_user("bob", "hash-b")
    box = meta.create_box(alice, "docs", SIZES)
    mine = meta.add_link("h1", box, "dir", alice, None)
    his = meta.add_link("h2", box, "", bob, 123.0)
    assert meta.link(mine).path == "dir" and meta.link_by_hash("h2").id == his  # type: ignore[union-attr]
    assert meta.link(999) is None and meta.link_by_hash("nope") is None
    assert [(k.link.id, k.box, k.owner, k.creator) for k in meta.links_for(alice, None)] == [
        (mine, "docs", "alice", "alice"), (his, "docs", "alice", "bob")]  # the owner sees every link of the box
    assert [k.link.id for k in meta.links_for(bob, box)] == [his]
    meta.revoke_link(mine)
    first = meta.link(mine).revoked  # type: ignore[union-attr]
    meta.revoke_link(mine)
    assert first is not None and meta.link(mine).revoked == first  # type: ignore[union-attr]
