"""The metadata-store interface: users, devices, boxes, shares, the block index, the journal, links.

Every method speaks the records of meta.records, never rows or connections. Writes are atomic per
call. What must be decided and written together, a commit (its conflict check, its new seq and its
journal entries) or a part of a staged commit, happens inside `commit_tx(box_id)`: one transaction
in which no other commit of the same box can run. That is the whole concurrency contract: a store
with one global writer (SQLite) gets it for free, a store with many (PostgreSQL) takes a lock on the
box, and commits to different boxes may then run in parallel.

Implementations: meta.sqlite (the default), meta.postgres (several server processes), meta.memory
(tests, and the reference of the contract suite in tests/contract/).

A store refuses a database whose schema is newer than its code (SchemaTooNew) and, opened without
upgrading, one older than its code (SchemaOutdated), before it reads or writes anything.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol

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

# A stage not committed within this many seconds is dropped (its client gave up or died).
STAGE_TTL = 24 * 3600

Fault = Literal["full", "damaged", "unavailable"]


class AlreadyExists(Exception):
    """A user or box name that is taken: nothing was written."""


class SchemaOutdated(RuntimeError):
    """The database's schema is older than this code and the store was opened without upgrading it: it is
    not touched. The message is one line naming the command that upgrades it."""

    def __init__(self, url: str, version: int, latest: int) -> None:
        self.url, self.version, self.latest = url, version, latest
        super().__init__(f"the metadata database is at schema version {version}, older than this server "
                         f"({latest}): run 'box-server migrate --meta {url}'")


class SchemaTooNew(RuntimeError):
    """The database was made by a newer Box than this one: it is not touched."""


class BlockReads(Protocol):
    """What a commit asks of the block index (also asked outside a commit)."""

    def block_sizes(self, digests: Sequence[bytes]) -> dict[bytes, int]:
        """The plain size of each of `digests` that the block store holds."""
        ...

    def readable_blocks(self, user_id: int, digests: Sequence[bytes]) -> set[bytes]:
        """Those `digests` that `user_id` has proved to hold (uploaded), or may read through a path of a
        box it is a member of (a folder member: a path under its folder). Knowing a hash gives nothing."""
        ...


class CommitTx(BlockReads, Protocol):
    """One box's commit transaction (see the module doc): reads see the box as of the transaction."""

    box_id: int

    def head(self) -> int:
        """The box's last seq."""
        ...

    def heads_of(self, paths: Sequence[str]) -> dict[str, PathHead]:
        """The head of each of `paths` that the box has ever held."""
        ...

    def present_kinds(self, paths: Sequence[str]) -> dict[str, str]:
        """The kind (file, dir, link) of each of `paths` that the head of the box holds."""
        ...

    def holding(self, paths: Sequence[str], deeper: bool = False) -> set[str]:
        """Those of `paths` under which the head holds something ('' for the top: anything at all); with
        `deeper`, something inside a folder directly under them."""
        ...

    def present_under(self, folder: str) -> list[str]:
        """Every path the head holds under `folder`, in order."""
        ...

    def append(self, user_id: int, device_id: int | None, message: str, entries: Sequence[NewEntry],
               key: str | None = None) -> CommitDone:
        """Write one commit of `entries` with the next seq of the box (its head plus one)."""
        ...

    # --- stages, inside the same transaction ----------------------------------------------

    def stage(self, stage: int) -> Stage | None:
        ...

    def add_staged(self, stage: int, entries: Sequence[NewEntry], parents: Sequence[int]) -> int:
        """Stage checked `entries`, each with the revision it was based on (a path staged again keeps its
        latest change); return how many changes the stage holds."""
        ...

    def add_stage_folders(self, stage: int, folders: Mapping[str, bool]) -> None:
        """Note the folders holding staged puts; `folders[f]`: it holds puts of files or links."""
        ...

    def stage_folders(self, stage: int) -> dict[str, bool]:
        """The folders noted by add_stage_folders."""
        ...

    def staged_kinds(self, stage: int, paths: Collection[str]) -> dict[str, tuple[str, str]]:
        """(op, kind) of the staged change of each of `paths` that the stage holds."""
        ...

    def staged_under(self, stage: int, folder: str, limit: int = -1) -> list[tuple[str, str, str]]:
        """(path, op, kind) of the staged changes under `folder`, in path order."""
        ...

    def staged_leaves_holding(self, stage: int, folders: Collection[str]) -> list[str]:
        """The staged puts of files and links directly inside `folders` under whose name the head holds
        something, in order."""
        ...

    def staged_outside(self, stage: int, prefix: str) -> bool:
        """True if the stage holds a path outside folder `prefix`."""
        ...

    def staged_conflicts(self, stage: int) -> list[StaleChange]:
        """The staged changes whose path moved on since the revision they were based on, in path order."""
        ...

    def append_staged(self, stage: int, user_id: int, device_id: int | None, message: str,
                      key: str | None = None) -> CommitDone:
        """Write one commit of every staged change (with the next seq) and drop the stage."""
        ...


class AccountStore(Protocol):
    """Users, their tokens and devices."""

    def add_user(self, name: str, token_hash: str) -> int:
        """A new user with its first token; AlreadyExists if the name is taken."""
        ...

    def user(self, user_id: int) -> User | None: ...

    def user_by_name(self, name: str) -> User | None: ...

    def set_password(self, user_id: int, password_hash: str) -> None: ...

    def token(self, token_hash: str) -> TokenOwner | None: ...

    def add_token(self, user_id: int, token_hash: str) -> None:
        """A new account token (bound to no device), as a password login hands out."""
        ...

    def add_device(self, user_id: int, name: str, kind: str, token_hash: str) -> int:
        """A device and its own token, in one transaction."""
        ...

    def device(self, device_id: int) -> Device | None: ...

    def devices(self, user_id: int) -> list[Device]:
        """The user's devices, by id."""
        ...

    def revoke_device(self, user_id: int, device_id: int) -> None:
        """Revoke a device of `user_id` and every token bound to it, at once (another user's: nothing)."""
        ...

    def touch_device(self, device_id: int, box_id: int | None = None, cursor: int | None = None,
                     folder: str = "") -> None:
        """Note the device was seen now; with a box, move the cursor of its synced folder `folder` in that box
        forward (never back). A device may sync one box in several folders, each with its own cursor; ''
        is a folder that does not say which it is (a client from before folders were told apart), and is
        dropped once a folder of that device and box names itself."""
        ...

    def device_cursors(self, device_id: int) -> list[DeviceCursor]:
        """The cursor of each of the device's synced folders in each box it has acknowledged, by box id and
        folder."""
        ...


class BoxStore(Protocol):
    """Boxes and who may read or write them."""

    def create_box(self, owner_id: int, name: str, sizes: tuple[int, int, int]) -> int:
        """A new box (its owner a member of all of it); AlreadyExists if the owner has one of that name."""
        ...

    def box(self, box_id: int) -> Box | None: ...

    def box_by_name(self, owner_id: int, name: str) -> Box | None: ...

    def boxes_of(self, user_id: int) -> list[MemberBox]:
        """Every share the user holds, by box id."""
        ...

    def head(self, box_id: int) -> int:
        """The box's last seq (0 for none, or no such box)."""
        ...

    def memberships(self, box_id: int, user_id: int) -> list[Member]:
        """The shares of one user in one box."""
        ...

    def members(self, box_id: int) -> list[Member]:
        """Every share of the box: the owner first, then by user name and folder."""
        ...

    def put_member(self, box_id: int, user_id: int, prefix: str, role: str) -> bool:
        """Add a share or change its role; True if it is new."""
        ...

    def remove_members(self, box_id: int, user_id: int, prefix: str | None) -> int:
        """Remove one share of a user (all of them when `prefix` is None), never the owner's; how many."""
        ...


class BlockIndex(BlockReads, Protocol):
    """Which blocks the store holds, where, who proved to hold them, and which were found damaged."""

    def block(self, digest: bytes) -> StoredBlock | None: ...

    def stored_blocks(self, digests: Sequence[bytes]) -> dict[bytes, StoredBlock]:
        """The stored blocks among `digests`."""
        ...

    def damaged_of(self, digests: Sequence[bytes]) -> set[bytes]:
        """Those `digests` known to be damaged in the block store."""
        ...

    def add_blocks(self, user_id: int, new: Sequence[StoredBlock], proved: Iterable[bytes],
                   healed: Sequence[bytes] = ()) -> None:
        """Record newly stored blocks (a block known already keeps its first home) and every block
        `user_id` proved to hold, in one transaction. `healed` blocks were damaged: their fresh copy in
        `new` replaces the old one and they are damaged no more."""
        ...

    def mark_damaged(self, found: Iterable[tuple[bytes, str]]) -> None:
        """Remember blocks found damaged, (digest, reason): uploaders are asked for them again."""
        ...


class JournalStore(Protocol):
    """Reading the journal: pages of changes, snapshots, history; whole-box and folder-scoped."""

    def commit_tx(self, box_id: int) -> AbstractContextManager[CommitTx]:
        """The box's commit transaction (see the module doc); rolled back if the block raises."""
        ...

    def create_stage(self, box_id: int, user_id: int) -> int:
        """A new, empty stage (ids are never reused); stages older than STAGE_TTL are dropped first."""
        ...

    def commit_by_key(self, box_id: int, key: str) -> CommitDone | None:
        """The commit made with the client's idempotency `key`, if any."""
        ...

    def changes(self, box_id: int, cursor: int, limit: int) -> tuple[list[Entry], int]:
        """Entries of whole commits after `cursor` (about `limit` of them, at least one commit), in (seq,
        path) order, and the last seq the page covers."""
        ...

    def tree(self, box_id: int, seq: int, prefix: str) -> list[Entry]:
        """The entries present at `seq` (latest put of each path not deleted since), at or under `prefix`."""
        ...

    def seq_at(self, box_id: int, when: float) -> int:
        """The last seq committed at or before time `when` (0 if none)."""
        ...

    def commits(self, box_id: int, limit: int, before: int | None) -> list[CommitInfo]:
        """Commits before seq `before` (or all), newest first."""
        ...

    def commit_paths(self, box_id: int, seq: int, limit: int) -> list[Entry]:
        """The entries of one commit, in path order."""
        ...

    def present_before(self, box_id: int, seq: int, paths: Sequence[str]) -> set[str]:
        """Those of `paths` the box held just before commit `seq` (a put of one of them by `seq` then modified
        it; of the others, added it)."""
        ...

    def path_history(self, box_id: int, prefix: str, limit: int) -> list[Revision]:
        """Every entry of `prefix` or under it, newest first, with its commit."""
        ...

    def count_after(self, box_id: int, cursor: int) -> int:
        """How many changes the commits after `cursor` hold."""
        ...

    # --- the head and the journal as a folder member sees them ------------------------------

    def path_state(self, box_id: int, path: str) -> str | None:
        """'file', 'dir' or 'link' if `path` is present now; 'dir' also when only paths under it are."""
        ...

    def current(self, box_id: int, path: str) -> Entry | None:
        """The entry of `path` as it is now, if present."""
        ...

    def current_under(self, box_id: int, prefix: str) -> list[Entry]:
        """Every present entry strictly under folder `prefix` ('' for the whole box), in path order."""
        ...

    def last_seq_under(self, box_id: int, prefix: str, after: int = 0) -> int | None:
        """The last commit after `after` that touched a path under `prefix`, or None."""
        ...

    def head_under(self, box_id: int, prefix: str) -> int:
        """The last commit that touched a path under `prefix` (0 if none)."""
        ...

    def count_under(self, box_id: int, prefix: str, cursor: int) -> int:
        """Entries under `prefix` after `cursor`."""
        ...

    def commits_under(self, box_id: int, prefix: str, limit: int, before: int | None) -> list[CommitInfo]:
        """Commits that touched a path under `prefix`, before seq `before`, newest first."""
        ...

    def commit_paths_under(self, box_id: int, seq: int, prefix: str, limit: int) -> tuple[list[Entry], int]:
        """The entries of one commit under `prefix` (at most `limit`), and how many there are."""
        ...


class LinkStore(Protocol):
    """Read-only links."""

    def add_link(self, token_hash: str, box_id: int, path: str, user_id: int, expires: float | None) -> int: ...

    def link(self, link_id: int) -> Link | None: ...

    def link_by_hash(self, token_hash: str) -> Link | None: ...

    def links_for(self, user_id: int, box_id: int | None) -> list[LinkListing]:
        """Links the user made, and every link of the boxes it owns (of one box, or all), by id."""
        ...

    def revoke_link(self, link_id: int) -> None:
        """Revoke a link (once: a second revocation keeps the first time)."""
        ...


class MetaStore(AccountStore, BoxStore, BlockIndex, JournalStore, LinkStore, Protocol):
    """The whole metadata store."""

    errors: tuple[type[BaseException], ...]  # the store's own exceptions, which `fault` may explain

    def fault(self, exc: BaseException) -> Fault | None:
        """'full' if `exc` says the store's disk is full, 'damaged' if its data is damaged, 'unavailable' if
        the store does not answer now (a lost connection: the client retries), else None."""
        ...

    def close(self) -> None:
        """Release connections (the store may not be used after)."""
        ...


__all__ = [
    "STAGE_TTL", "AccountStore", "AlreadyExists", "BlockIndex", "BlockReads", "BoxStore", "CommitTx", "Fault",
    "JournalStore", "LinkStore", "MetaStore", "SchemaOutdated", "SchemaTooNew",
]
