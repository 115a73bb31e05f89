"""Read-only links: long random tokens (only their SHA-256 is stored) that open one file or folder of a
box to anyone holding the URL, until the link expires, is revoked, or its maker loses access.

A link reads blocks only through the files under its own path, so it can never reach anything else.
Downloads stream block by block, each checked against its SHA-256; "Download all" streams a zip
built on the fly (zipfile writing to a non-seekable sink: data descriptors, never held in memory).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from box_common.paths import InvalidPath, is_under, normalize_path
from server_min.errors import BadRequest, Damaged, Forbidden, NotFound, ServerError
from server_min.integrity import verified
from server_min.meta.base import MetaStore
from server_min.meta.records import Entry, Link
from server_min.service.access import Caller, Rights
from server_min.service.blocks import Blocks
from server_min.service.sharing import folder_of

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
MAX_EXPIRY = 10 * 365 * 86400.0
ZIP_PART = 1 << 20


class LinkGone(ServerError):
    """A link that cannot be opened: 404 (unknown) or 410 (expired, revoked); `title` heads its page."""

    status = 404
    code = "link_gone"

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title


def hash_link_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """What a link URL points at: the link, the path inside the box, and its entry (None for a folder)."""

    link: Link
    box_name: str
    path: str  # box path of what is shown
    sub: str  # path relative to the link's own path ('' for the link itself)
    entry: Entry | None

    @property
    def is_folder(self) -> bool:
        return self.entry is None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1] if self.path else self.box_name


class Links:
    """Create, list, revoke and open links."""

    def __init__(self, meta: MetaStore, rights: Rights, blocks: Blocks) -> None:
        self.store = meta
        self.rights = rights
        self.blocks = blocks

    # --- managing links (authenticated) ---------------------------------------------------

    def create(self, caller: Caller, box_id: int, path: str, expires_in: float | None) -> dict[str, Any]:
        """A new link to `path` (relative to the caller's view of the box); the token is shown only here."""
        access = self.rights.access(caller, box_id)
        if not access.can_write:
            raise Forbidden(f"you have {access.role} access to box {access.box.name!r}; "
                            "making links needs editor access")
        rel = folder_of(path)
        full = f"{access.prefix}/{rel}" if access.prefix and rel else access.prefix or rel
        kind = self.store.path_state(box_id, full)
        if kind is None:
            raise NotFound(f"box {access.box.name!r} has no {rel!r}")
        if kind == "link":
            raise BadRequest(f"{rel!r} is a symbolic link; link to a file or a folder")
        if expires_in is not None and not (0 < expires_in <= MAX_EXPIRY):
            raise BadRequest("expiry must be between 1 second and 10 years")
        token = secrets.token_urlsafe(32)
        expires = time.time() + expires_in if expires_in is not None else None
        link_id = self.store.add_link(hash_link_token(token), box_id, full, caller.user_id, expires)
        return {"id": link_id, "path": rel, "kind": kind, "expires": expires, "url_path": f"/l/{token}",
                "token": token}

    def list(self, caller: Caller, box_id: int | None) -> list[dict[str, Any]]:
        """Links the caller made, and all links of boxes the caller owns; never their tokens."""
        now = time.time()
        listed = []
        for listing in self.store.links_for(caller.user_id, box_id):
            link = listing.link
            path = link.path
            if link.user_id == caller.user_id and listing.owner != caller.name:
                try:
                    access = self.rights.access(caller, link.box_id)
                except NotFound:
                    continue
                if access.prefix:
                    if not is_under(path, access.prefix):
                        continue
                    path = path[len(access.prefix) + 1 :] if path != access.prefix else ""
            state = "revoked" if link.revoked else "expired" if link.expires and link.expires <= now else "active"
            listed.append({"id": link.id, "box": f"{listing.owner}/{listing.box}", "box_id": link.box_id,
                           "path": path, "creator": listing.creator, "created": link.created,
                           "expires": link.expires, "state": state})
        return listed

    def revoke(self, caller: Caller, ref: str) -> dict[str, Any]:
        """Revoke a link by id or by the SHA-256 of its token: its next request gets 410."""
        row = None
        if re.fullmatch(r"[0-9]{1,18}", ref):
            row = self.store.link(int(ref))
        elif re.fullmatch(r"[0-9a-f]{64}", ref):
            row = self.store.link_by_hash(ref)
        if row is not None and row.user_id != caller.user_id:
            box = self.store.box(row.box_id)
            if box is None or box.owner_id != caller.user_id:
                row = None
        if row is None:
            raise NotFound(f"no link {ref[:80]!r} of yours; see 'boxctl link ls'")
        self.store.revoke_link(row.id)
        return {"id": row.id, "revoked": True}

    # --- opening links (anyone with the URL) ------------------------------------------------

    def open(self, token: str, sub: str = "") -> Target:
        """The file or folder a link URL shows, or LinkGone."""
        if not TOKEN_RE.match(token):
            raise LinkGone(404, "No such link", "This link does not exist. Check that you copied all of it.")
        row = self.store.link_by_hash(hash_link_token(token))
        if row is None:
            raise LinkGone(404, "No such link", "This link does not exist. Check that you copied all of it.")
        if row.revoked:
            raise LinkGone(410, "Link revoked", "The owner has turned this link off.")
        if row.expires is not None and row.expires <= time.time():
            raise LinkGone(410, "Link expired", "This link has expired. Ask its owner for a new one.")
        box_id, path = row.box_id, row.path
        # The link lives only as long as its maker may still read what it points at.
        shares = self.store.memberships(box_id, row.user_id)
        if not any(is_under(path, s.prefix) for s in shares):
            raise LinkGone(410, "Link no longer works", "What this link shared is no longer shared.")
        sub = sub.strip("/")
        if sub:
            try:
                sub = normalize_path(sub)
            except InvalidPath:
                raise LinkGone(404, "Not found", "There is nothing at this address.") from None
        full = f"{path}/{sub}" if path and sub else path or sub
        box = self.store.box(box_id)
        box_name = box.name if box else "box"
        entry = self.store.current(box_id, full) if full else None
        if entry is not None:
            verified([entry])
        if entry is not None and entry.kind == "file":
            return Target(row, box_name, full, sub, entry)
        if (entry is not None and entry.kind == "dir") or self.store.path_state(box_id, full) == "dir":
            return Target(row, box_name, full, sub, None)
        raise LinkGone(404, "Not found", "This file or folder is no longer there.")

    def listing(self, target: Target) -> list[dict[str, Any]]:
        """The direct children of a folder target: folders first, then files, by name."""
        children: dict[str, dict[str, Any]] = {}
        base = target.path
        cut = len(base) + 1 if base else 0
        for row in verified(self.store.current_under(target.link.box_id, base)):
            rel = row.path[cut:]
            name, _, rest = rel.partition("/")
            if rest:  # something deeper: its top folder is a child even without an entry of its own
                children.setdefault(name, {"name": name, "kind": "dir", "size": 0, "mtime_ns": 0})
                continue
            children[name] = {"name": name, "kind": row.kind, "size": row.size, "mtime_ns": row.mtime_ns,
                              "target": row.target}
        return sorted(children.values(), key=lambda c: (c["kind"] != "dir", c["name"].lower(), c["name"]))

    def file_bytes(self, entry: Entry, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The plain bytes [start, stop) of a file entry (all of it by default), block by block, each checked
        against its SHA-256. A range reads only the blocks that hold it: the block index gives each block's
        size, so the range is mapped onto the block list before any block is read (a resumed download of
        the last gigabyte of a big file reads that gigabyte)."""
        blob = entry.blocks
        digests = [blob[i : i + 32] for i in range(0, len(blob), 32)]
        stop = entry.size if stop is None else stop
        if start == 0 and stop == entry.size:
            pieces = [(digest, 0, None) for digest in digests]
        else:
            pieces = self._pieces(entry, digests, start, stop)
        for at in range(0, len(pieces), 256):
            part = pieces[at : at + 256]
            stored = self.store.stored_blocks([digest for digest, _, _ in part])
            for digest, first, last in part:
                block = stored.get(digest)
                if block is None:
                    raise Damaged(f"block {digest.hex()} of {entry.path} is missing from the store",
                                  blocks=[digest.hex()])
                plain = self.blocks.verified_plain(block)
                yield plain if first == 0 and last is None else plain[first:last]

    def _pieces(self, entry: Entry, digests: list[bytes], start: int, stop: int) -> list[tuple[bytes, int, int]]:
        """The blocks holding bytes [start, stop) of `entry`, each with the slice of it that falls inside."""
        sizes: dict[bytes, int] = {}
        unique = list(dict.fromkeys(digests))
        for at in range(0, len(unique), 1000):
            sizes.update(self.store.block_sizes(unique[at : at + 1000]))
        pieces = []
        offset = 0
        for digest in digests:
            size = sizes.get(digest)
            if size is None:
                raise Damaged(f"block {digest.hex()} of {entry.path} is missing from the store",
                              blocks=[digest.hex()])
            if offset + size > start:
                pieces.append((digest, max(0, start - offset), min(size, stop - offset)))
            offset += size
            if offset >= stop:
                break
        return pieces

    def zip_stream(self, target: Target) -> Iterator[bytes]:
        """A zip of everything under a folder target, produced piece by piece as it is read."""
        sink = _Sink()
        top = target.name
        cut = len(target.path) + 1 if target.path else 0
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for row in verified(self.store.current_under(target.link.box_id, target.path)):
                rel = f"{top}/{row.path[cut:]}"
                when = time.gmtime(max(row.mtime_ns // 1_000_000_000, 315532800))[:6]
                if row.kind == "dir":
                    info = zipfile.ZipInfo(rel + "/", date_time=when)
                    info.external_attr = (0o40755 << 16) | 0x10
                    zf.writestr(info, b"")
                elif row.kind == "file":
                    info = zipfile.ZipInfo(rel, date_time=when)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = ((row.mode & 0o777) | 0o100000) << 16
                    with zf.open(info, "w", force_zip64=row.size >= 1 << 31) as out:
                        for piece in self.file_bytes(row):
                            out.write(piece)
                            if sink.size >= ZIP_PART:
                                yield sink.take()
                if sink.size >= ZIP_PART:
                    yield sink.take()
        yield sink.take()


class _Sink:
    """A write-only, non-seekable file object that collects what zipfile writes until taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.position = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


__all__ = ["LinkGone", "Links", "Target", "hash_link_token"]
