"""What the server decides: who may do what, which blocks are missing, and atomic commits.

The HTTP layer (app.py) calls these methods; they raise ServerError subclasses that carry
their status. Nothing here knows about HTTP, SQL strings or file paths of the block store.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from box_common.codec import compressor
from box_common.content import content_hash
from box_common.delta import signature
from box_common.frames import (
    CODEC_DAMAGED,
    CODEC_DELTA,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER,
    MAX_BLOCK,
    Frame,
    FrameError,
    decode_frames,
)
from box_common.paths import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_SYNC_NAME_BYTES,
    MAX_SYNC_PATH_BYTES,
    InvalidPath,
    is_plain_path,
    normalize_path,
    normalize_prefix,
    sync_limit_error,
)
from server_min import kinds
from server_min.blocks.local import LocalBlocks
from server_min.errors import (
    BadRequest,
    Conflict,
    Damaged,
    Forbidden,
    NotFound,
    TooLarge,
    Unauthorized,
    Unprocessable,
)
from server_min.expand import Budget, expand, plain_bytes, rebuild
from server_min.integrity import is_full, out_of_space, verified_rows
from server_min.meta.sqlite import SqliteMeta
from server_min.meta.sqlite_sharing import SqliteSharing
from server_min.proved import ProvedBlocks
from server_min.sharing import Sharing, folder_of

MAX_CHANGES = 500_000  # in one request
MAX_STAGED = 10_000_000  # in one staged commit
MAX_HASHES = 100_000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX_ALL = re.compile(r"[0-9a-f]*")
DEFAULT_SIZES = (256 << 10, 1 << 20, 4 << 20)
KINDS = ("file", "dir", "link")
ROLES_WRITE = ("owner", "editor")

def hash_token(token: str) -> str:
    """Tokens are 32 random bytes, so one SHA-256 is enough: only this hash is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh device token."""
    return "box_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Caller:
    """The authenticated user (and device) behind a request."""

    user_id: int
    name: str
    device_id: int | None


@dataclass(frozen=True)
class Access:
    """A caller's rights on one box: its role and the folder it is confined to ('' for all)."""

    box: sqlite3.Row
    role: str
    prefix: str

    @property
    def can_write(self) -> bool:
        return self.role in ROLES_WRITE


class Service:
    """The server's rules over one metadata store and one block store."""

    def __init__(self, data_dir: Path, on_commit: Callable[[int, int], None] | None = None) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: see datadir.py
        self.meta = SqliteMeta(data_dir / "meta.db")
        self.blocks = LocalBlocks(data_dir / "blocks")
        self.on_commit = on_commit
        self.sharing = Sharing(self, SqliteSharing(self.meta))
        self.proved = ProvedBlocks()

    # --- users and devices ------------------------------------------------------------------

    def add_user(self, name: str) -> str:
        """Create a user and return its first token (shown once; only the hash is kept)."""
        if not NAME_RE.match(name):
            raise BadRequest(f"user name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if self.meta.user_by_name(name):
            raise Conflict(f"user {name!r} already exists")
        token = new_token()
        self.meta.add_user(name, hash_token(token))
        return token

    def authenticate(self, token: str | None) -> Caller:
        """The caller a bearer token belongs to, or Unauthorized."""
        if not token:
            raise Unauthorized("missing token: run 'boxctl login URL --user NAME --token TOKEN'")
        row = self.meta.token(hash_token(token))
        if row is None or row["revoked"]:
            raise Unauthorized("invalid or revoked token")
        return Caller(int(row["user_id"]), str(row["name"]), row["device_id"])

    def register_device(self, caller: Caller, name: str, kind: str) -> dict[str, Any]:
        """Record a new device of the caller."""
        name = name.strip()
        if not name or len(name) > 64 or any(ord(ch) < 32 or ch in "/\\" for ch in name):
            raise BadRequest("device name must be 1-64 printable characters without slashes")
        if kind not in ("desktop", "laptop", "server", "phone", "ci", "other"):
            raise BadRequest(f"unknown device kind {kind!r}")
        token = new_token()
        device_id = self.meta.add_device(caller.user_id, name, kind, hash_token(token))
        return {"id": device_id, "name": name, "kind": kind, "token": token}

    def list_devices(self, caller: Caller) -> list[dict[str, Any]]:
        """The caller's devices, with how far each has acknowledged each box and how much it is behind."""
        devices = []
        for d in self.meta.devices(caller.user_id):
            boxes = []
            for c in self.meta.device_cursors(d["id"]):
                try:  # a folder member counts only its folder; a box no longer shared is left out
                    access = self.access(caller, int(c["box_id"]))
                except NotFound:
                    continue
                boxes.append({"box_id": c["box_id"], "box": c["box"], "cursor": c["cursor"],
                              "head": self.sharing.head(access),
                              "behind": self.sharing.waiting(access, c["cursor"], None), "acked": c["updated"]})
            devices.append({
                "id": d["id"], "name": d["name"], "kind": d["kind"], "created": d["created"],
                "last_seen": d["last_seen"], "revoked": bool(d["revoked"]), "current": d["id"] == caller.device_id,
                "behind": sum(b["behind"] for b in boxes), "boxes": boxes,
            })
        return devices

    def revoke_device(self, caller: Caller, ref: str) -> dict[str, Any]:
        """Revoke one of the caller's devices, by id or name; its next request gets 401."""
        matches = [d for d in self.meta.devices(caller.user_id)
                   if (str(d["id"]) == ref or d["name"] == ref) and not d["revoked"]]
        if not matches:
            raise NotFound(f"no active device {ref!r}; see 'boxctl devices'")
        if len(matches) > 1:
            ids = ", ".join(str(d["id"]) for d in matches)
            raise Conflict(f"{len(matches)} devices are named {ref!r} (ids {ids}); revoke one by id")
        self.meta.revoke_device(caller.user_id, int(matches[0]["id"]))
        return {"id": matches[0]["id"], "name": matches[0]["name"], "revoked": True}

    def check_device(self, caller: Caller, device_id: int | None) -> int | None:
        """A device id the caller may speak for, or None."""
        if device_id is None:
            return caller.device_id
        row = self.meta.device(device_id)
        if row is None or row["user_id"] != caller.user_id:
            raise BadRequest(f"device {device_id} is not one of yours")
        return device_id

    # --- boxes ------------------------------------------------------------------------------

    def create_box(self, caller: Caller, name: str, sizes: tuple[int, int, int] | None) -> dict[str, Any]:
        """Create a box owned by the caller, or return it if it exists already."""
        if not NAME_RE.match(name):
            raise BadRequest(f"box name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        existing = self.meta.box_by_name(caller.user_id, name)
        if existing is not None:
            return self._box_json(self.access(caller, int(existing["id"])))
        sizes = sizes or DEFAULT_SIZES
        lo, avg, hi = sizes
        if not (64 <= lo <= avg <= hi <= MAX_BLOCK) or not (256 <= avg <= 4 << 20) or hi < 1024:
            raise BadRequest("chunk sizes must satisfy 64 <= min <= avg <= max <= 16 MiB")
        try:
            box_id = self.meta.create_box(caller.user_id, name, sizes)
        except sqlite3.IntegrityError:
            box_id = int(self.meta.box_by_name(caller.user_id, name)["id"])
        return self._box_json(self.access(caller, box_id))

    def find_box(self, caller: Caller, ref: str) -> dict[str, Any]:
        """Resolve 'BOX' (the caller's own), 'OWNER/BOX', or 'OWNER/BOX/FOLDER' (a folder shared with
        the caller) to a box the caller may read."""
        parts = ref.split("/", 2)
        owner_name, box_name = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        folder = folder_of(parts[2]) if len(parts) > 2 else None
        owner = self.meta.user_by_name(owner_name) if owner_name else None
        owner_id = caller.user_id if not owner_name else (int(owner["id"]) if owner else -1)
        row = self.meta.box_by_name(owner_id, box_name)
        try:
            if row is None:
                raise NotFound("no such box")
            access = self.access(caller, int(row["id"]))
        except NotFound:  # the same answer whether the box exists or not, and never its id
            raise NotFound(f"no box named {ref!r} that you can access") from None
        if folder and access.prefix != folder:
            if not access.prefix:
                raise Unprocessable(f"you have the whole box {owner_name}/{box_name}: clone it without a folder")
            raise NotFound(f"no box named {ref!r} that you can access")
        return self._box_json(access)

    def list_boxes(self, caller: Caller) -> list[dict[str, Any]]:
        return [
            {"id": r["id"], "name": r["name"], "owner": r["owner"], "role": r["role"], "prefix": r["prefix"],
             "head": self.sharing.head(Access(r, str(r["role"]), str(r["prefix"])))}
            for r in self.meta.boxes_of(caller.user_id)
        ]

    def access(self, caller: Caller, box_id: int, write: bool = False) -> Access:
        """The caller's rights on a box: NotFound when it has none (no one learns what exists)."""
        box = self.meta.box(box_id)
        rows = self.meta.memberships(box_id, caller.user_id) if box is not None else []
        if box is None or not rows:
            raise NotFound(f"no box {box_id} that you can access")
        best = min(rows, key=lambda r: (len(r["prefix"]), r["role"] not in ROLES_WRITE))
        access = Access(box, str(best["role"]), str(best["prefix"]))
        if write and not access.can_write:
            raise Forbidden(f"you have {access.role} access to box {box['name']!r}; pushing needs editor access")
        return access

    def _box_json(self, access: Access) -> dict[str, Any]:
        box = access.box
        return {
            "id": box["id"], "name": box["name"], "owner": box["owner"], "role": access.role,
            "prefix": access.prefix, "head": self.sharing.head(access),
            "chunking": {"min": box["min_size"], "avg": box["avg_size"], "max": box["max_size"]},
        }

    def box_info(self, caller: Caller, box_id: int) -> dict[str, Any]:
        return self._box_json(self.access(caller, box_id))

    # --- blocks -----------------------------------------------------------------------------

    def missing(self, caller: Caller, hashes: list[str]) -> list[str]:
        """Which of `hashes` the caller must upload: all that it has not proved to hold."""
        digests = _digests(hashes)
        with self.meta.read() as conn:
            stored = self.meta.block_sizes(conn, digests)
            readable = self.meta.readable_blocks(conn, caller.user_id, list(stored))
            readable -= self.meta.damaged_of(conn, list(readable))  # any uploader may heal a damaged block
        # A block stored for someone else is still "missing" for this caller: no oracle.
        return [d.hex() for d in dict.fromkeys(digests) if d not in readable]

    def store_pack(self, caller: Caller, body: bytes | memoryview) -> dict[str, int]:
        """Verify every frame of an upload body, store the new blocks in one pack, record possession.

        A writable body (the server's upload buffer) may be rearranged in place.
        """
        view = memoryview(body)
        try:
            frames = list(decode_frames(view, max_payload=MAX_BLOCK + 1024))
        except FrameError as exc:
            raise BadRequest(f"malformed upload body: {exc}") from None
        # digest -> (frame as stored, plain size, where its payload starts in the body or -1 once rebuilt)
        verified: dict[bytes, tuple[Frame, int, int]] = {}
        budget = Budget(len(view))  # all the decompressing and rebuilding this body may cause (see expand.py)
        at = 0
        for frame in frames:
            at += HEADER.size
            start = at
            at += len(frame.payload)
            if bytes.fromhex(frame.sha256) in verified:
                continue  # the same block twice: checked once
            if frame.codec == CODEC_DELTA:
                frame, plain = self._rebuild(caller, frame, budget)
                start = -1
            else:
                plain = expand(frame, budget)
            if hashlib.sha256(plain).hexdigest() != frame.sha256:
                raise Unprocessable(f"block {frame.sha256} does not match its SHA-256; nothing was stored")
            verified.setdefault(bytes.fromhex(frame.sha256), (frame, len(plain), start))
        with self.meta.read() as conn:
            stored = self.meta.existing_blocks(conn, list(verified))
            readable = self.meta.readable_blocks(conn, caller.user_id, list(stored)) if stored else set()
            healed = self.meta.damaged_of(conn, list(stored))  # a fresh copy replaces a damaged one
        # A block stored for someone else that this caller cannot read takes the same path as a new one:
        # written and fsynced in the pack (its row then ignored), so the time of the answer does not tell
        # that it existed. A pack of nothing but such blocks is dropped again; in a pack with new blocks
        # their bytes stay, unreferenced (the price of no timing oracle; a compaction could reclaim them).
        new = [(d, f, size, start) for d, (f, size, start) in verified.items() if d not in readable or d in healed]
        rows: list[tuple[bytes, int, int, int, str, int]] = []
        pack = None
        if new:
            pack, offsets = self._write_pack(view, [(f.payload, start) for _, f, _, start in new])
            rows = [(d, size, len(f.payload), f.codec, pack, off)
                    for (d, f, size, _), off in zip(new, offsets, strict=True)]
            if all(d in stored and d not in healed for d, *_ in new):
                self.blocks.remove_pack(pack)
                pack, rows = None, []
        try:
            self.meta.add_blocks(caller.user_id, rows, verified.keys(), [d for d, *_ in new if d in healed])
        except Exception as exc:
            if pack is not None:
                self.blocks.remove_pack(pack)  # no row points to it: its bytes are freed at once
            if is_full(exc):
                raise out_of_space() from None
            raise
        self.proved.add(caller.user_id, ((d, size) for d, (_, size, _) in verified.items()))
        # The answer is the same whether a block was new or already stored for someone else: no oracle.
        return {"received": len(frames), "stored": len(verified), "bytes": len(view)}

    def _write_pack(self, body: memoryview, payloads: list[tuple[bytes | memoryview, int]]) -> tuple[str, list[int]]:
        """Store `payloads` (each with where it starts in `body`, or -1 if it is not there) in one pack.

        A writable body (the server's upload buffer) is packed tight in place, the frame headers and
        blocks stored already squeezed out (a memmove: 40 ms a GiB), and goes to disk as one page-aligned
        write of the buffer itself: no copy, no page cache.
        """
        try:
            return self._write_pack_tight(body, payloads)
        except OSError as exc:
            if is_full(exc):  # the pack's temp file is gone already: nothing of this upload stays
                raise out_of_space() from None
            raise

    def _write_pack_tight(self, body: memoryview, payloads: list[tuple[bytes | memoryview, int]]
                          ) -> tuple[str, list[int]]:
        if body.readonly or any(start < 0 for _, start in payloads):
            return self.blocks.write_pack([payload for payload, _ in payloads])
        offsets, end = [], 0
        for payload, start in payloads:
            size = len(payload)
            if start != end:  # never past `start`: what is still to move stays intact
                body[end : end + size] = body[start : start + size]  # memoryview copies overlaps safely
            offsets.append(end)
            end += size
        pack, _ = self.blocks.write_pack([body[:end]])
        return pack, offsets

    def _rebuild(self, caller: Caller, frame: Frame, budget: Budget) -> tuple[Frame, bytes]:
        """Turn a delta frame into a stored frame: rebuild the block from its base, which the caller must read."""
        payload = frame.payload
        if len(payload) < 36:
            raise BadRequest(f"delta for block {frame.sha256} is truncated")
        base_sha, window = bytes(payload[:32]).hex(), int.from_bytes(payload[32:36], "big")
        budget.check()
        base = self.read_block(caller, base_sha)
        budget.spend(len(base))  # reading a base decompresses and hashes it: it counts
        plain = rebuild(frame.sha256, base, window, payload[36:], budget)
        packed = compressor().compress(plain)
        if len(packed) < len(plain):
            return Frame(frame.sha256, CODEC_ZSTD, packed), plain
        return Frame(frame.sha256, CODEC_RAW, plain), plain

    def block_signature(self, caller: Caller, sha: str, window: int) -> bytes:
        """The rsync-style signature of a block the caller may read, for delta uploads against it."""
        if not 256 <= window <= 1 << 20:
            raise BadRequest("window must be between 256 and 1 MiB")
        return signature(self.read_block(caller, sha), window).encode()

    def block_signatures(self, caller: Caller, hashes: list[str], window: int) -> bytes:
        """Signatures of several blocks in one answer, as frames (codec raw); all must be readable."""
        if not 256 <= window <= 1 << 20:
            raise BadRequest("window must be between 256 and 1 MiB")
        if len(hashes) > 1000:
            raise TooLarge("ask for at most 1000 signatures at once")
        parts = []
        for sha, row in self.readable_frames(caller, hashes):
            try:
                plain = self.verified_plain(sha, row)
            except Damaged:
                continue  # no signature, no delta against it: the client sends the block whole
            sig = signature(plain, window).encode()
            parts.append(HEADER.pack(bytes.fromhex(sha), CODEC_RAW, len(sig)) + sig)
        return b"".join(parts)

    def readable_frames(self, caller: Caller, hashes: list[str]) -> list[tuple[str, sqlite3.Row]]:
        """The stored rows of `hashes`, after checking the caller may read every one."""
        digests = list(dict.fromkeys(_digests(hashes)))
        with self.meta.read() as conn:
            stored = self.meta.existing_blocks(conn, digests)
            readable = self.meta.readable_blocks(conn, caller.user_id, list(stored))
        for d in digests:
            if d not in readable:
                raise NotFound(f"no block {d.hex()} that you can read")
        return [(d.hex(), stored[d]) for d in digests]

    def frame_bytes(self, sha: str, row: sqlite3.Row) -> Iterator[bytes]:
        """One frame (header then payload) of a stored block, as read from its pack.

        A pack gone or cut short makes a marker frame instead (codec CODEC_DAMAGED, the reason as
        payload): a stream cannot change its status once started, and the client must learn which block
        it lost. The payload is not hashed here: the client checks every block it receives (rule 5), and
        one that fails asks GET /blocks/{sha}, which checks it here and remembers it if damaged.
        """
        try:
            payload = self.blocks.read(row["pack"], row["offset"], row["stored_size"])
        except OSError as exc:
            reason = self._damaged(sha, exc).message.encode()
            yield HEADER.pack(bytes.fromhex(sha), CODEC_DAMAGED, len(reason)) + reason
            return
        yield HEADER.pack(bytes.fromhex(sha), row["codec"], len(payload))
        yield payload

    def read_block(self, caller: Caller, sha: str) -> bytes:
        """The plain bytes of one block the caller may read, checked against its hash."""
        ((_, row),) = self.readable_frames(caller, [sha])
        return self.verified_plain(sha, row)

    def verified_plain(self, sha: str, row: sqlite3.Row) -> bytes:
        """The plain bytes of the stored block `row`, checked against its hash (rule 5)."""
        return bytes(self._checked_payload(sha, row)[1])

    def _checked_payload(self, sha: str, row: sqlite3.Row) -> tuple[bytes, bytes | memoryview]:
        """The stored payload of block `row` and its plain bytes, or Damaged (and the block remembered as
        damaged) when its pack is gone or cut short, its zstd is broken or its SHA-256 does not match."""
        try:
            payload = self.blocks.read(row["pack"], row["offset"], row["stored_size"])
            plain = plain_bytes(Frame(sha, row["codec"], payload))
            if hashlib.sha256(plain).hexdigest() != sha:
                raise Unprocessable("its SHA-256 does not match")
        except (OSError, Unprocessable) as exc:
            raise self._damaged(sha, exc) from None
        return payload, plain

    def _damaged(self, sha: str, exc: OSError | Unprocessable) -> Damaged:
        """Remember block `sha` as damaged (uploaders are asked for it again); the error that says so."""
        reason = exc.message if isinstance(exc, Unprocessable) else (exc.strerror or str(exc))
        self.meta.mark_damaged([(bytes.fromhex(sha), reason)])
        return Damaged(f"block {sha} is damaged on the server: {reason}", blocks=[sha])

    # --- commits and the journal ------------------------------------------------------------

    def commit(self, caller: Caller, box_id: int, message: str, device_id: int | None,
               changes: list[dict[str, Any]], key: str | None = None, stage: int | None = None) -> dict[str, Any]:
        """Apply `changes` as one atomic commit, or nothing at all (409 naming every conflicting path).

        With `stage`, the commit applies every change staged there (see add_to_stage) plus `changes`.
        `key`, chosen by the client, makes a retried commit safe: the same key answers with the
        commit it already made instead of committing twice.
        """
        access = self.access(caller, box_id, write=True)
        device_id = self.check_device(caller, device_id)
        if key is not None:
            done = self.meta.commit_by_key(box_id, key)
            if done is not None:
                return {"seq": done["seq"], "time": done["time"], "previous_head": -1,
                        "changes": done["nchanges"], "replayed": True}
        if not changes and stage is None:
            raise BadRequest("a commit needs at least one change")
        entries, parents = self._checked_changes(changes, access.prefix)
        with self.meta.write() as conn:
            self._check_blocks(conn, caller, entries)
            if stage is None:
                conflicts = self._conflicts(conn, box_id, entries, parents)
            else:
                self._own_stage(conn, caller, box_id, stage, access.prefix)
                if entries:
                    self.meta.add_staged(conn, stage, entries, parents)
                    self.meta.add_stage_folders(conn, stage, kinds.folders_of(entries))
                conflicts = self.meta.staged_conflicts(conn, box_id, stage)
            if conflicts:
                raise Conflict(
                    f"{len(conflicts)} path(s) changed on the server since your last pull; "
                    "run 'boxctl pull' and push again",
                    conflicts=conflicts[:1000],
                )
            seen = (kinds.EntryPaths(self.meta, conn, box_id, entries) if stage is None
                    else kinds.StagedPaths(self.meta, conn, box_id, stage))
            clash = kinds.clashes(self.meta, conn, box_id, seen)
            if clash:
                raise kinds.refusal(clash, lambda path: _strip(path, access.prefix))
            previous = self.meta.head_in(conn, box_id)
            if stage is None:
                seq, when = self.meta.append_commit(conn, box_id, caller.user_id, device_id, message, entries, key)
                count = len(entries)
            else:
                seq, when, count = self.meta.append_staged_commit(conn, box_id, caller.user_id, device_id,
                                                                  message, stage, key)
                if not count:
                    raise BadRequest("a commit needs at least one change (the stage is empty)")
        if device_id is not None:
            self.meta.touch_device(device_id)
        if self.on_commit is not None:
            self.on_commit(box_id, seq)
        return {"seq": seq, "time": when, "previous_head": previous, "changes": count}

    def commit_by_key(self, caller: Caller, box_id: int, key: str) -> dict[str, Any]:
        """The commit made with the client's `key` (NotFound if none): how a push that died before the
        answer reached it learns whether its commit landed, and with which seq."""
        self.access(caller, box_id, write=True)
        done = self.meta.commit_by_key(box_id, key)
        if done is None:
            raise NotFound("no commit with this key")
        return {"seq": done["seq"], "time": done["time"], "changes": done["nchanges"]}

    def create_stage(self, caller: Caller, box_id: int) -> dict[str, Any]:
        """A new stage: a commit sent in parts. It lives a day unless a commit applies it sooner."""
        self.access(caller, box_id, write=True)
        return {"stage": self.meta.create_stage(box_id, caller.user_id), "staged": 0}

    def add_to_stage(self, caller: Caller, box_id: int, stage: int, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """Check `changes` as a commit would (paths, blocks uploaded and readable, sizes) and stage them.

        Nothing is visible until the commit that names the stage; conflicts are judged then. A path
        staged again keeps its latest change, so a retried request does no harm.
        """
        access = self.access(caller, box_id, write=True)
        if not changes:
            raise BadRequest("stage at least one change")
        entries, parents = self._checked_changes(changes, access.prefix)
        with self.meta.read() as conn:
            # Blocks are never taken away from the store or from a user who proved them, so this check
            # holds at the commit too; made outside the write, it keeps other writers waiting less.
            self._check_blocks(conn, caller, entries)
        with self.meta.write() as conn:
            self._own_stage(conn, caller, box_id, stage, access.prefix)
            total = self.meta.add_staged(conn, stage, entries, parents)
            self.meta.add_stage_folders(conn, stage, kinds.folders_of(entries))
            if total > MAX_STAGED:
                raise TooLarge(f"a commit may hold at most {MAX_STAGED} changes")
        return {"stage": stage, "staged": total}

    @staticmethod
    def _checked_changes(changes: list[dict[str, Any]], prefix: str) -> tuple[list[dict[str, Any]], list[int]]:
        """The journal entries of a request's `changes` and the revision each was based on (400 if invalid)."""
        if len(changes) > MAX_CHANGES:
            raise TooLarge(f"send at most {MAX_CHANGES} changes at once (stage larger commits in parts)")
        entries = _entries(changes, prefix)
        if len({e["path"] for e in entries}) != len(entries):
            raise BadRequest("a commit names the same path twice")
        return entries, [int(c.get("parent_rev") or 0) for c in changes]

    def _check_blocks(self, conn: sqlite3.Connection, caller: Caller, entries: list[dict[str, Any]]) -> None:
        """422 unless every block of `entries` is stored, readable by the caller, and sums to its file's size."""
        wanted = list({bytes(e["blocks"][i : i + 32]) for e in entries for i in range(0, len(e["blocks"]), 32)})
        stored = self.proved.sizes(caller.user_id, wanted)  # just uploaded, most of a push's blocks
        rest = [d for d in wanted if d not in stored] if stored else wanted
        found = self.meta.block_sizes(conn, rest)
        readable = self.meta.readable_blocks(conn, caller.user_id, list(found))
        stored.update((d, size) for d, size in found.items() if d in readable)
        absent = [d.hex() for d in wanted if d not in stored]
        if absent:
            raise Unprocessable(
                f"{len(absent)} block(s) of this commit are not on the server; upload them first",
                missing=absent[:100],
            )
        for e in entries:
            if e["kind"] == "file":
                total = sum(stored[e["blocks"][i : i + 32]] for i in range(0, len(e["blocks"]), 32))
                if total != e["size"]:
                    raise Unprocessable(f"{e['path']}: size {e['size']} does not match its blocks ({total})")

    def _conflicts(self, conn: sqlite3.Connection, box_id: int, entries: list[dict[str, Any]],
                   parents: list[int]) -> list[dict[str, Any]]:
        """The changes whose path moved on since the revision they were based on."""
        heads = self.meta.heads_of(conn, box_id, [e["path"] for e in entries])
        conflicts = []
        for e, parent in zip(entries, parents, strict=True):
            head = heads.get(e["path"])
            current, present = (int(head["rev"]), bool(head["present"])) if head else (0, False)
            if e["op"] == "put" and (parent == current or (not present and parent == 0)):
                continue
            if e["op"] == "delete" and present and parent == current:
                continue
            conflicts.append({"path": e["path"], "parent_rev": parent, "head_rev": current, "present": present})
        return conflicts

    def _own_stage(self, conn: sqlite3.Connection, caller: Caller, box_id: int, stage: int, prefix: str) -> None:
        """404 unless `stage` is the caller's, in this box, and inside the folder the caller may write."""
        row = self.meta.stage(conn, stage)
        if row is None or row["box_id"] != box_id or row["user_id"] != caller.user_id:
            raise NotFound(f"no stage {stage} in this box: it was committed already, or expired; push again")
        if prefix and self.meta.staged_outside(conn, stage, prefix):
            raise Forbidden(f"this stage holds paths outside the folder {prefix!r} you may write; push again")

    def changes(self, caller: Caller, box_id: int, cursor: int, limit: int) -> dict[str, Any]:
        """Journal entries after `cursor` (whole commits), within the caller's folder."""
        access = self.access(caller, box_id)
        rows, upto = self.meta.changes(box_id, cursor, max(1, min(limit, 100_000)))
        rows = verified_rows(rows)
        if caller.device_id is not None:
            self.meta.touch_device(caller.device_id, box_id, cursor)
        head = self.meta.head(box_id)
        return {
            "entries": [_entry_json(r, access.prefix) for r in rows if _visible(r["path"], access.prefix)],
            "cursor": upto,
            "head": head if not access.prefix else self.sharing.head_after(access, cursor),
            "more": upto < head,
        }

    def ack(self, caller: Caller, box_id: int, device_id: int, cursor: int) -> None:
        """Record that a device has applied the journal up to `cursor`."""
        self.access(caller, box_id)
        self.check_device(caller, device_id)
        self.meta.touch_device(device_id, box_id, cursor)

    def head(self, caller: Caller, box_id: int, cursor: int = 0) -> int:
        """The head a long poll compares with `cursor`; for a folder member, the last commit after `cursor`
        that touched its folder (else `cursor`), so commits elsewhere in the box neither wake nor show."""
        return self.sharing.head_after(self.access(caller, box_id), cursor)

    def pending(self, caller: Caller, box_id: int, cursor: int, device_id: int | None) -> dict[str, int]:
        access = self.access(caller, box_id)
        return {"head": self.sharing.head_after(access, cursor),
                "waiting": self.sharing.waiting(access, cursor, device_id)}

    def tree(self, caller: Caller, box_id: int, at: int | None, when: float | None, prefix: str) -> dict[str, Any]:
        """The box (or a folder of it) as it was at commit `at`, at time `when`, or now."""
        access = self.access(caller, box_id)
        try:
            prefix = normalize_prefix(prefix)
        except InvalidPath as exc:
            raise BadRequest(str(exc)) from None
        scope = _join(access.prefix, prefix)
        # A folder member's head, times and bounds count only the commits it may see (see Sharing.seq_at).
        head = self.meta.head(box_id) if not access.prefix else self.sharing.head(access)
        seq = head if at is None and when is None else (
            at if at is not None else self.sharing.seq_at(access, when or 0))
        if seq < 0 or seq > head:
            raise NotFound(f"box has no commit {seq}; its head is {head}")
        rows = verified_rows(self.meta.tree(box_id, seq, scope))
        return {"seq": seq, "head": head,
                "entries": [_entry_json(r, access.prefix) for r in rows if _visible(r["path"], access.prefix)]}

    def log(self, caller: Caller, box_id: int, path: str | None, limit: int, before: int | None) -> dict[str, Any]:
        """Commits newest first, or every revision of one path (or folder), deletions included."""
        access = self.access(caller, box_id)
        limit = max(1, min(limit, 10_000))
        if path:
            try:
                scope = _join(access.prefix, normalize_prefix(path))
            except InvalidPath as exc:
                raise BadRequest(str(exc)) from None
            rows = verified_rows(self.meta.path_history(box_id, scope, limit))
            return {"revisions": [
                {"rev": r["seq"], "path": _strip(r["path"], access.prefix), "op": r["op"], "kind": r["kind"],
                 "size": r["size"], "content_hash": _content_hash_of(r), "time": r["time"], "user": r["user"],
                 "device": r["device"], "message": r["message"]}
                for r in rows
            ]}
        commits = []
        store = self.sharing.store
        for c in (store.commits_under(box_id, access.prefix, limit, before) if access.prefix
                  else self.meta.commits(box_id, limit, before)):
            if access.prefix:  # a folder member sees only the part of each commit inside its folder
                paths, count = store.commit_paths_under(box_id, c["seq"], access.prefix, 1000)
            else:
                paths, count = self.meta.commit_paths(box_id, c["seq"], 1000), c["nchanges"]
            paths = verified_rows(paths)
            commits.append({
                "seq": c["seq"], "time": c["time"], "user": c["user"], "device": c["device"],
                "message": c["message"], "changes": count,
                "paths": [{"path": _strip(p["path"], access.prefix), "op": p["op"], "kind": p["kind"]}
                          for p in paths],
            })
        return {"commits": commits}


def _digests(hashes: list[str]) -> list[bytes]:
    if not isinstance(hashes, list) or len(hashes) > MAX_HASHES:
        raise TooLarge(f"ask about at most {MAX_HASHES} hashes at once")
    if all(isinstance(h, str) and len(h) == 64 for h in hashes) and HEX_ALL.fullmatch("".join(hashes)):
        joined = bytes.fromhex("".join(hashes))  # one check and one conversion for the whole list
        return [joined[i : i + 32] for i in range(0, len(joined), 32)]
    for h in hashes:
        if not isinstance(h, str) or not HEX64.match(h):
            raise BadRequest(f"{str(h)[:80]!r} is not a lowercase hex SHA-256")
    return [bytes.fromhex(h) for h in hashes]


def _join(prefix: str, path: str) -> str:
    return f"{prefix}/{path}" if prefix and path else prefix or path


def _visible(path: str, prefix: str) -> bool:
    """True if a member of folder `prefix` sees `path`: anything strictly inside it ('' sees all)."""
    return not prefix or path.startswith(prefix + "/")


def _strip(path: str, prefix: str) -> str:
    return path[len(prefix) + 1 :] if prefix else path


def _over_limits(path: str) -> bool:
    """True if a path is longer or deeper than any Box path may be (422, where a malformed one is 400)."""
    encoded = path.encode("utf-8", "surrogateescape")
    return (len(encoded) > MAX_PATH_BYTES or path.count("/") >= MAX_DEPTH
            or any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")))


def _check_sync_limits(path: str) -> None:
    """422 naming the path if a member could not write it, or its conflicted copy (see box_common.paths)."""
    if path.isascii() and len(path) <= MAX_SYNC_PATH_BYTES and (
            len(path) <= MAX_SYNC_NAME_BYTES or not _LONG_NAME.search(path)):
        return  # the common case, without encoding
    why = sync_limit_error(path)
    if why is not None:
        raise Unprocessable(f"path {path[:200]!r} {why}; rename it to push", path=path[:MAX_PATH_BYTES])


_LONG_NAME = re.compile(f"[^/]{{{MAX_SYNC_NAME_BYTES + 1}}}")


def _checked_path(raw: Any) -> str:
    """A change's path checked against every rule: 422 over the limits, 400 malformed or not canonical."""
    if isinstance(raw, str) and _over_limits(raw):
        raise Unprocessable(f"path {raw[:60]!r}... is over the limits: {MAX_SYNC_PATH_BYTES} bytes, {MAX_DEPTH} "
                            f"levels, {MAX_SYNC_NAME_BYTES} bytes per name", path=raw[:MAX_PATH_BYTES])
    try:
        path = normalize_path(raw) if isinstance(raw, str) else normalize_path("")
    except InvalidPath as exc:
        raise BadRequest(str(exc)) from None
    if path != raw:
        raise BadRequest(f"path {raw!r} is not in canonical form (NFC, no trailing slash)")
    return path


INT_FIELDS = (("size", 0), ("mtime_ns", 0), ("mode", 0o644), ("parent_rev", 0))


def _entries(changes: list[Any], prefix: str) -> list[dict[str, Any]]:
    """Validate every change of a commit and turn each into a journal entry (see _entry).

    Puts of files with plain paths, nearly all of a large commit, take one fast pass: their block
    hashes are checked and converted together. Any other change, or any doubt, gets _entry's checks,
    so the errors are the same either way.
    """
    entries: list[dict[str, Any]] = []
    hexes: list[str] = []
    counts: list[int] = []  # per entry: how many of `hexes` are its blocks, -1 when _entry made it
    for change in changes:
        entry = _plain_put(change, prefix, hexes)
        if entry is None:
            entries.append(_entry(change, prefix))
            counts.append(-1)
        else:
            entries.append(entry)
            counts.append(len(entry["blocks"]))
    joined = "".join(hexes)
    if not HEX_ALL.fullmatch(joined):
        return [_entry(change, prefix) for change in changes]  # raises, naming the bad hash
    digests = bytes.fromhex(joined)
    at = 0
    for entry, count in zip(entries, counts, strict=True):
        if count >= 0:
            entry["blocks"] = digests[at : at + 32 * count]
            at += 32 * count
    return entries


def _plain_put(change: Any, prefix: str, hexes: list[str]) -> dict[str, Any] | None:
    """The entry of a file put whose every field is plainly valid, its hex hashes added to `hexes`
    (entry["blocks"] holds them until the caller converts them); None for anything else."""
    if type(change) is not dict or change.get("op") != "put" or change.get("kind", "file") != "file":
        return None
    path = change.get("path")
    if type(path) is not str or not is_plain_path(path) or _in_box_dir(path):
        return None
    if len(path) > MAX_SYNC_NAME_BYTES and (len(path) > MAX_SYNC_PATH_BYTES or _LONG_NAME.search(path)):
        return None  # _entry refuses it, naming the limit
    ints = []
    for key, default in INT_FIELDS:
        value = change.get(key)
        if value is None:
            value = default
        elif type(value) is not int or not 0 <= value < 1 << 63:
            return None
        ints.append(value)
    blocks = change.get("blocks") or []
    if type(blocks) is not list or len(blocks) > MAX_HASHES or not all(
            type(h) is str and len(h) == 64 for h in blocks):
        return None
    hexes += blocks
    return {"path": _join(prefix, path), "op": "put", "kind": "file", "size": ints[0], "mtime_ns": ints[1],
            "mode": ints[2] & 0o7777, "blocks": blocks, "target": None}


def _entry(change: Any, prefix: str) -> dict[str, Any]:
    """Validate one change of a commit and turn it into a journal entry (paths made absolute in the box)."""
    if not isinstance(change, dict):
        raise BadRequest("each change must be an object")
    raw = change.get("path")
    # The common case, a plain ASCII path, is canonical as it is; anything else gets every check.
    path = raw if isinstance(raw, str) and is_plain_path(raw) else _checked_path(raw)
    _check_sync_limits(path)
    if _in_box_dir(path):
        raise BadRequest(f"{path}: a .box folder is never synced, at any depth")
    op = change.get("op")
    kind = change.get("kind", "file")
    if op not in ("put", "delete"):
        raise BadRequest(f"{path}: op must be 'put' or 'delete'")
    if kind not in KINDS:
        raise BadRequest(f"{path}: kind must be one of {', '.join(KINDS)}")
    ints = {}
    for key, default in INT_FIELDS:
        value = change.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 63:
            raise BadRequest(f"{path}: {key} must be a non-negative integer")
        ints[key] = value
    blocks = change.get("blocks") or []
    target = change.get("target")
    if op == "put" and kind == "file":
        if not isinstance(blocks, list):
            raise BadRequest(f"{path}: blocks must be a list of SHA-256 hashes")
        digests = b"".join(_digests(blocks))
    else:
        digests = b""
    if op == "put" and kind == "link":
        if not isinstance(target, str) or not target or len(target) > 4096 or "\x00" in target:
            raise BadRequest(f"{path}: a link needs a target of 1-4096 characters")
    else:
        target = None
    return {
        "path": _join(prefix, path), "op": op, "kind": kind, "size": ints["size"] if kind == "file" else 0,
        "mtime_ns": ints["mtime_ns"], "mode": ints["mode"] & 0o7777, "blocks": digests,
        "target": target,
    }


def _entry_json(row: sqlite3.Row, prefix: str) -> dict[str, Any]:
    blocks = bytes(row["blocks"])
    return {
        "seq": row["seq"], "path": _strip(row["path"], prefix), "op": row["op"], "kind": row["kind"],
        "size": row["size"], "mtime_ns": row["mtime_ns"], "mode": row["mode"],
        "blocks": [blocks[i : i + 32].hex() for i in range(0, len(blocks), 32)],
        "content_hash": _content_hash_of(row), "target": row["target"],
    }


def _content_hash_of(row: sqlite3.Row) -> str:
    """A journal row's content hash: computed from its blocks (rows written before that kept it as text)."""
    if row["content_hash"]:
        return str(row["content_hash"])
    if row["op"] != "put":
        return ""
    return content_hash(row["kind"], bytes(row["blocks"]) if row["blocks"] else b"", row["target"])


__all__ = ["CODEC_RAW", "CODEC_ZSTD", "Access", "Caller", "Service", "hash_token"]


def _in_box_dir(path: str) -> bool:
    """True for `.box` or a path through it, at any depth (a client's own folder: never synced)."""
    return f"/{path}/".find("/.box/") >= 0
