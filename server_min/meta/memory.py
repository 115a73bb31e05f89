"""A metadata store in memory: for tests, and the plainest reading of the meta.base contract.

Every method takes one mutex for its reads and writes. A commit transaction holds its box's own
lock (never a global one), as a store of many writers must; its writes keep an undo list, replayed
if the transaction fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from server_min.integrity import entry_checksum
from server_min.meta.base import STAGE_TTL, AlreadyExists, Fault
from server_min.meta.records import (
    Box,
    CommitDone,
    CommitInfo,
    Device,
    DeviceCursor,
    Entry,
    Link,
    LinkListing,
    Member,
    MemberBox,
    NewEntry,
    PathHead,
    Revision,
    Stage,
    StaleChange,
    StoredBlock,
    TokenOwner,
    User,
)


@dataclass
class _Commit:
    seq: int
    time: float
    user_id: int
    device_id: int | None
    message: str
    changes: int
    key: str | None


def _under(path: str, prefix: str) -> bool:
    """Strictly under folder `prefix` ('' holds everything)."""
    return not prefix or path.startswith(prefix + "/")


def _stale(op: str, parent: int, head: PathHead | None) -> bool:
    current, present = (head.rev, head.present) if head else (0, False)
    if op == "put":
        return not (parent == current or (not present and parent == 0))
    return not (present and parent == current)


class MemoryMeta:
    """meta.base.MetaStore in dicts."""

    errors: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._mutex = threading.RLock()
        self._box_locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._ids = itertools.count(1)
        self.users: dict[int, User] = {}
        self.tokens: dict[str, TokenOwner] = {}
        self.device_rows: dict[int, Device] = {}
        self.cursors: dict[tuple[int, int], tuple[int, float]] = {}
        self.boxes: dict[int, Box] = {}
        self.shares: dict[tuple[int, int, str], str] = {}  # (box, user, prefix) -> role
        self.blocks: dict[bytes, StoredBlock] = {}
        self.uploads: set[tuple[int, bytes]] = set()
        self.block_paths: dict[bytes, set[tuple[int, str]]] = defaultdict(set)
        self.damaged: dict[bytes, str] = {}
        self.commit_rows: dict[int, list[_Commit]] = defaultdict(list)
        self.journal: dict[int, list[Entry]] = defaultdict(list)
        self.files: dict[int, dict[str, PathHead]] = defaultdict(dict)
        self.stages: dict[int, Stage] = {}
        self.staged: dict[int, dict[str, tuple[NewEntry, int]]] = {}
        self.staged_folders: dict[int, dict[str, bool]] = {}
        self.link_rows: dict[int, Link] = {}

    def _id(self) -> int:
        return next(self._ids)

    def fault(self, exc: BaseException) -> Fault | None:
        return None

    def close(self) -> None:
        return None

    # --- accounts ---------------------------------------------------------------------------

    def add_user(self, name: str, token_hash: str) -> int:
        with self._mutex:
            if self.user_by_name(name) is not None:
                raise AlreadyExists(f"user {name!r} already exists")
            user = User(self._id(), name, None, time.time())
            self.users[user.id] = user
            self.tokens[token_hash] = TokenOwner(user.id, name, None, False)
            return user.id

    def user(self, user_id: int) -> User | None:
        return self.users.get(user_id)

    def user_by_name(self, name: str) -> User | None:
        with self._mutex:
            return next((u for u in self.users.values() if u.name == name), None)

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self._mutex:
            self.users[user_id] = dataclasses.replace(self.users[user_id], password_hash=password_hash)

    def token(self, token_hash: str) -> TokenOwner | None:
        return self.tokens.get(token_hash)

    def add_token(self, user_id: int, token_hash: str) -> None:
        with self._mutex:
            self.tokens[token_hash] = TokenOwner(user_id, self.users[user_id].name, None, False)

    def add_device(self, user_id: int, name: str, kind: str, token_hash: str) -> int:
        with self._mutex:
            now = time.time()
            device = Device(self._id(), user_id, name, kind, now, now, False)
            self.device_rows[device.id] = device
            self.tokens[token_hash] = TokenOwner(user_id, self.users[user_id].name, device.id, False)
            return device.id

    def device(self, device_id: int) -> Device | None:
        return self.device_rows.get(device_id)

    def devices(self, user_id: int) -> list[Device]:
        with self._mutex:
            return sorted((d for d in self.device_rows.values() if d.user_id == user_id), key=lambda d: d.id)

    def revoke_device(self, user_id: int, device_id: int) -> None:
        with self._mutex:
            device = self.device_rows.get(device_id)
            if device is None or device.user_id != user_id:
                return
            self.device_rows[device_id] = dataclasses.replace(device, revoked=True)
            for key, owner in self.tokens.items():
                if owner.device_id == device_id:
                    self.tokens[key] = dataclasses.replace(owner, revoked=True)

    def touch_device(self, device_id: int, box_id: int | None = None, cursor: int | None = None) -> None:
        with self._mutex:
            now = time.time()
            if device_id in self.device_rows:
                self.device_rows[device_id] = dataclasses.replace(self.device_rows[device_id], last_seen=now)
            if box_id is not None and cursor is not None:
                old = self.cursors.get((device_id, box_id), (cursor, now))[0]
                self.cursors[(device_id, box_id)] = (max(old, cursor), now)

    def device_cursors(self, device_id: int) -> list[DeviceCursor]:
        with self._mutex:
            return [DeviceCursor(box, self.boxes[box].name, cursor, updated)
                    for (dev, box), (cursor, updated) in sorted(self.cursors.items()) if dev == device_id]

    # --- boxes and members ------------------------------------------------------------------

    def create_box(self, owner_id: int, name: str, sizes: tuple[int, int, int]) -> int:
        with self._mutex:
            if self.box_by_name(owner_id, name) is not None:
                raise AlreadyExists(f"box {name!r} already exists")
            box = Box(self._id(), owner_id, self.users[owner_id].name, name, *sizes, time.time(), 0)
            self.boxes[box.id] = box
            self.shares[(box.id, owner_id, "")] = "owner"
            return box.id

    def box(self, box_id: int) -> Box | None:
        return self.boxes.get(box_id)

    def box_by_name(self, owner_id: int, name: str) -> Box | None:
        with self._mutex:
            return next((b for b in self.boxes.values() if b.owner_id == owner_id and b.name == name), None)

    def boxes_of(self, user_id: int) -> list[MemberBox]:
        with self._mutex:
            return [MemberBox(self.boxes[b], role, prefix)
                    for (b, u, prefix), role in sorted(self.shares.items()) if u == user_id]

    def head(self, box_id: int) -> int:
        box = self.boxes.get(box_id)
        return box.head if box else 0

    def _members(self, box_id: int) -> list[Member]:
        return [Member(u, self.users[u].name, prefix, role)
                for (b, u, prefix), role in self.shares.items() if b == box_id]

    def memberships(self, box_id: int, user_id: int) -> list[Member]:
        with self._mutex:
            return [m for m in self._members(box_id) if m.user_id == user_id]

    def members(self, box_id: int) -> list[Member]:
        with self._mutex:
            return sorted(self._members(box_id), key=lambda m: (m.role != "owner", m.name, m.prefix))

    def put_member(self, box_id: int, user_id: int, prefix: str, role: str) -> bool:
        with self._mutex:
            new = (box_id, user_id, prefix) not in self.shares
            self.shares[(box_id, user_id, prefix)] = role
            return new

    def remove_members(self, box_id: int, user_id: int, prefix: str | None) -> int:
        with self._mutex:
            gone = [k for k, role in self.shares.items() if k[0] == box_id and k[1] == user_id and role != "owner"
                    and (prefix is None or k[2] == prefix)]
            for key in gone:
                del self.shares[key]
            return len(gone)

    # --- blocks -----------------------------------------------------------------------------

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
                box == b and _under(path, prefix) for box, path in self.block_paths.get(d, ()) for b, prefix in shares)}

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

    # --- the journal ------------------------------------------------------------------------

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

    def create_stage(self, box_id: int, user_id: int) -> int:
        with self._mutex:
            for old in [s.id for s in self.stages.values() if s.created < time.time() - STAGE_TTL]:
                self._drop_stage(old)
            stage = Stage(self._id(), box_id, user_id, time.time())
            self.stages[stage.id] = stage
            self.staged[stage.id] = {}
            self.staged_folders[stage.id] = {}
            return stage.id

    def _drop_stage(self, stage: int) -> None:
        self.stages.pop(stage, None)
        self.staged.pop(stage, None)
        self.staged_folders.pop(stage, None)

    def commit_by_key(self, box_id: int, key: str) -> CommitDone | None:
        with self._mutex:
            c = next((c for c in self.commit_rows[box_id] if c.key == key), None)
            return None if c is None else CommitDone(c.seq, c.time, c.changes)

    def _visible(self, box_id: int) -> list[Entry]:
        """The journal up to the head (a commit under way is not seen)."""
        head = self.head(box_id)
        return [e for e in self.journal[box_id] if e.seq <= head]

    def changes(self, box_id: int, cursor: int, limit: int) -> tuple[list[Entry], int]:
        with self._mutex:
            upto, total = cursor, 0
            for c in self.commit_rows[box_id]:
                if c.seq <= cursor or c.seq > self.head(box_id):
                    continue
                if total and total + c.changes > limit:
                    break
                upto, total = c.seq, total + c.changes
            return sorted((e for e in self.journal[box_id] if cursor < e.seq <= upto),
                          key=lambda e: (e.seq, e.path)), upto

    def tree(self, box_id: int, seq: int, prefix: str) -> list[Entry]:
        with self._mutex:
            latest: dict[str, Entry] = {}
            for e in self.journal[box_id]:
                if e.seq <= seq and (e.path == prefix or _under(e.path, prefix)):
                    latest[e.path] = e
            return [latest[p] for p in sorted(latest) if latest[p].op == "put"]

    def seq_at(self, box_id: int, when: float) -> int:
        with self._mutex:
            return max((c.seq for c in self.commit_rows[box_id] if c.time <= when), default=0)

    def _info(self, c: _Commit) -> CommitInfo:
        device = self.device_rows.get(c.device_id) if c.device_id is not None else None
        return CommitInfo(c.seq, c.time, self.users[c.user_id].name, device.name if device else None, c.device_id,
                          c.message, c.changes)

    def _commits(self, box_id: int, limit: int, before: int | None, keep: Callable[[int], bool]) -> list[CommitInfo]:
        with self._mutex:
            found = [c for c in self.commit_rows[box_id]
                     if c.seq <= self.head(box_id) and (before is None or c.seq < before) and keep(c.seq)]
            return [self._info(c) for c in sorted(found, key=lambda c: -c.seq)[:limit]]

    def commits(self, box_id: int, limit: int, before: int | None) -> list[CommitInfo]:
        return self._commits(box_id, limit, before, lambda _: True)

    def commit_paths(self, box_id: int, seq: int, limit: int) -> list[Entry]:
        with self._mutex:
            return sorted((e for e in self.journal[box_id] if e.seq == seq), key=lambda e: e.path)[:limit]

    def path_history(self, box_id: int, prefix: str, limit: int) -> list[Revision]:
        with self._mutex:
            commits = {c.seq: c for c in self.commit_rows[box_id]}
            found = sorted((e for e in self._visible(box_id) if e.path == prefix or _under(e.path, prefix)),
                           key=lambda e: (-e.seq, e.path))[:limit]
            return [Revision(e, self._info(commits[e.seq])) for e in found]

    def count_after(self, box_id: int, cursor: int, exclude_device: int | None) -> int:
        with self._mutex:
            return sum(c.changes for c in self.commit_rows[box_id] if cursor < c.seq <= self.head(box_id)
                       and (c.device_id is None or c.device_id != exclude_device))

    # --- folder views -----------------------------------------------------------------------

    def _present(self, box_id: int) -> dict[str, Entry]:
        entries = {(e.seq, e.path): e for e in self.journal[box_id]}
        return {p: entries[(h.rev, p)] for p, h in self.files[box_id].items() if h.present}

    def path_state(self, box_id: int, path: str) -> str | None:
        with self._mutex:
            present = self._present(box_id)
            if path in present:
                return present[path].kind
            return "dir" if path == "" or any(_under(p, path) for p in present) else None

    def current(self, box_id: int, path: str) -> Entry | None:
        with self._mutex:
            return self._present(box_id).get(path)

    def current_under(self, box_id: int, prefix: str) -> list[Entry]:
        with self._mutex:
            present = self._present(box_id)
            return [present[p] for p in sorted(present) if _under(p, prefix)]

    def last_seq_under(self, box_id: int, prefix: str, after: int = 0) -> int | None:
        with self._mutex:
            return max((e.seq for e in self._visible(box_id) if e.seq > after and _under(e.path, prefix)),
                       default=None)

    def head_under(self, box_id: int, prefix: str) -> int:
        with self._mutex:
            return max((h.rev for p, h in self.files[box_id].items() if _under(p, prefix)), default=0)

    def count_under(self, box_id: int, prefix: str, cursor: int, exclude_device: int | None) -> int:
        with self._mutex:
            devices = {c.seq: c.device_id for c in self.commit_rows[box_id]}
            return sum(1 for e in self._visible(box_id) if e.seq > cursor and _under(e.path, prefix)
                       and (devices[e.seq] is None or devices[e.seq] != exclude_device))

    def commits_under(self, box_id: int, prefix: str, limit: int, before: int | None) -> list[CommitInfo]:
        with self._mutex:
            touched = {e.seq for e in self.journal[box_id] if _under(e.path, prefix)}
        return self._commits(box_id, limit, before, touched.__contains__)

    def commit_paths_under(self, box_id: int, seq: int, prefix: str, limit: int) -> tuple[list[Entry], int]:
        found = [e for e in self.commit_paths(box_id, seq, 1 << 62) if _under(e.path, prefix)]
        return found[:limit], len(found)

    # --- links ------------------------------------------------------------------------------

    def add_link(self, token_hash: str, box_id: int, path: str, user_id: int, expires: float | None) -> int:
        with self._mutex:
            link = Link(self._id(), token_hash, box_id, path, user_id, time.time(), expires, None)
            self.link_rows[link.id] = link
            return link.id

    def link(self, link_id: int) -> Link | None:
        return self.link_rows.get(link_id)

    def link_by_hash(self, token_hash: str) -> Link | None:
        with self._mutex:
            return next((k for k in self.link_rows.values() if k.token_hash == token_hash), None)

    def links_for(self, user_id: int, box_id: int | None) -> list[LinkListing]:
        with self._mutex:
            found = []
            for link in sorted(self.link_rows.values(), key=lambda k: k.id):
                box = self.boxes[link.box_id]
                if (link.user_id == user_id or box.owner_id == user_id) and box_id in (None, link.box_id):
                    found.append(LinkListing(link, box.name, box.owner, self.users[link.user_id].name))
            return found

    def revoke_link(self, link_id: int) -> None:
        with self._mutex:
            link = self.link_rows.get(link_id)
            if link is not None and link.revoked is None:
                self.link_rows[link_id] = dataclasses.replace(link, revoked=time.time())


class MemoryCommitTx:
    """meta.base.CommitTx in memory: holds the box's lock; `undo` takes back its writes if it fails."""

    def __init__(self, meta: MemoryMeta, box_id: int) -> None:
        self.meta = meta
        self.box_id = box_id
        self.undo: list[Callable[[], None]] = []

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        return self.meta.block_sizes(digests)

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        return self.meta.readable_blocks(user_id, digests)

    def head(self) -> int:
        return self.meta.head(self.box_id)

    def heads_of(self, paths: Sequence[str]) -> dict[str, PathHead]:
        files = self.meta.files[self.box_id]
        return {p: files[p] for p in paths if p in files}

    def present_kinds(self, paths: Sequence[str]) -> dict[str, str]:
        with self.meta._mutex:
            present = self.meta._present(self.box_id)
            return {p: present[p].kind for p in paths if p in present}

    def holding(self, paths: Sequence[str], deeper: bool = False) -> set[str]:
        with self.meta._mutex:
            present = [p for p, h in self.meta.files[self.box_id].items() if h.present]
        found = set()
        for folder in paths:
            for p in present:
                if _under(p, folder) and (not deeper or "/" in p[len(folder) + 1 if folder else 0 :]):
                    found.add(folder)
                    break
        return found

    def present_under(self, folder: str) -> list[str]:
        return sorted(p for p, h in self.meta.files[self.box_id].items() if h.present and p.startswith(folder + "/"))

    def _write(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None) -> CommitDone:
        meta, box_id = self.meta, self.box_id
        with meta._mutex:
            box = meta.boxes[box_id]
            seq, now = box.head + 1, time.time()
            files = meta.files[box_id]
            before = {e.path: files.get(e.path) for e in entries}
            journal, commits = meta.journal[box_id], meta.commit_rows[box_id]
            size = len(journal)
            for e in sorted(entries, key=lambda e: e.path):
                journal.append(Entry(box_id, seq, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode, e.blocks, e.target,
                                     entry_checksum(box_id, seq, e.path, e.op, e.kind, e.size, e.mtime_ns, e.mode,
                                                    e.blocks, e.target)))
                files[e.path] = PathHead(seq, e.op == "put")
                for i in range(0, len(e.blocks), 32):
                    meta.block_paths[e.blocks[i : i + 32]].add((box_id, e.path))
            commits.append(_Commit(seq, now, user_id, device_id, message, len(entries), key))
            meta.boxes[box_id] = dataclasses.replace(box, head=seq)

        def undo() -> None:
            del journal[size:]
            commits.pop()
            meta.boxes[box_id] = box
            for path, head in before.items():
                if head is None:
                    files.pop(path, None)
                else:
                    files[path] = head
        self.undo.append(undo)  # (block_paths only ever grow: an extra one grants nothing a block lacks)
        return CommitDone(seq, now, len(entries))

    def append(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None = None) -> CommitDone:
        return self._write(user_id, device_id, message, entries, key)

    def stage(self, stage: int) -> Stage | None:
        return self.meta.stages.get(stage)

    def add_staged(self, stage: int, entries: Sequence[NewEntry], parents: Sequence[int]) -> int:
        with self.meta._mutex:
            staged = self.meta.staged[stage]
            before = dict(staged)
            staged.update((e.path, (e, parent)) for e, parent in zip(entries, parents, strict=True))
            self.undo.append(lambda: (staged.clear(), staged.update(before)))
            return len(staged)

    def add_stage_folders(self, stage: int, folders: Mapping[str, bool]) -> None:
        with self.meta._mutex:
            noted = self.meta.staged_folders[stage]
            before = dict(noted)
            for folder, leaves in folders.items():
                noted[folder] = noted.get(folder, False) or leaves
            self.undo.append(lambda: (noted.clear(), noted.update(before)))

    def stage_folders(self, stage: int) -> dict[str, bool]:
        return dict(self.meta.staged_folders.get(stage, {}))

    def staged_kinds(self, stage: int, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        staged = self.meta.staged.get(stage, {})
        return {p: (staged[p][0].op, staged[p][0].kind) for p in paths if p in staged}

    def staged_under(self, stage: int, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        staged = self.meta.staged.get(stage, {})
        found = [(p, e.op, e.kind) for p, (e, _) in sorted(staged.items()) if p.startswith(folder + "/")]
        return found if limit < 0 else found[:limit]

    def staged_leaves_holding(self, stage: int, folders: Collection[str]) -> list[str]:
        staged = self.meta.staged.get(stage, {})
        wanted = set(folders)
        leaves = [p for p, (e, _) in staged.items()
                  if e.op == "put" and e.kind != "dir" and p.rpartition("/")[0] in wanted]
        return sorted(self.holding(leaves))

    def staged_outside(self, stage: int, prefix: str) -> bool:
        return any(not p.startswith(prefix + "/") for p in self.meta.staged.get(stage, {}))

    def staged_conflicts(self, stage: int) -> list[StaleChange]:
        files = self.meta.files[self.box_id]
        found = []
        for path, (e, parent) in sorted(self.meta.staged.get(stage, {}).items()):
            head = files.get(path)
            if _stale(e.op, parent, head):
                found.append(StaleChange(path, parent, head.rev if head else 0, head.present if head else False))
        return found

    def append_staged(self, stage: int, user_id: int, device_id: int | None, message: str,
                      key: str | None = None) -> CommitDone:
        meta = self.meta
        with meta._mutex:
            entries = [e for e, _ in meta.staged[stage].values()]
            saved = (meta.stages[stage], meta.staged[stage], meta.staged_folders[stage])
            done = self._write(user_id, device_id, message, entries, key)
            meta._drop_stage(stage)

        def undo() -> None:
            meta.stages[stage], meta.staged[stage], meta.staged_folders[stage] = saved
        self.undo.append(undo)
        return done


__all__ = ["MemoryCommitTx", "MemoryMeta"]
