"""The one validator of incoming changes: a commit's or a stage's changes checked and turned into journal
entries (paths made absolute in the box), or a 400/413/422 naming what is wrong."""

from __future__ import annotations

import re
from typing import Any

from box_common.paths import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_SYNC_NAME_BYTES,
    MAX_SYNC_PATH_BYTES,
    InvalidPath,
    is_plain_path,
    normalize_path,
    sync_limit_error,
)
from server_min.errors import BadRequest, TooLarge, Unprocessable
from server_min.meta.records import NewEntry

MAX_CHANGES = 500_000  # in one request
MAX_HASHES = 100_000
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX_ALL = re.compile(r"[0-9a-f]*")
KINDS = ("file", "dir", "link")
INT_FIELDS = (("size", 0), ("mtime_ns", 0), ("mode", 0o644), ("parent_rev", 0))
_LONG_NAME = re.compile(f"[^/]{{{MAX_SYNC_NAME_BYTES + 1}}}")


def digests(hashes: list[str]) -> list[bytes]:
    """Hex SHA-256 hashes from the network as digests (400 naming a bad one, 413 for too many)."""
    if not isinstance(hashes, list) or len(hashes) > MAX_HASHES:
        raise TooLarge(f"ask about at most {MAX_HASHES} hashes at once")
    if all(isinstance(h, str) and len(h) == 64 for h in hashes) and HEX_ALL.fullmatch("".join(hashes)):
        joined = bytes.fromhex("".join(hashes))  # one check and one conversion for the whole list
        return [joined[i : i + 32] for i in range(0, len(joined), 32)]
    for h in hashes:
        if not isinstance(h, str) or not HEX64.match(h):
            raise BadRequest(f"{str(h)[:80]!r} is not a lowercase hex SHA-256")
    return [bytes.fromhex(h) for h in hashes]


def join(prefix: str, path: str) -> str:
    """`path` of a folder member's view as a path of the box."""
    return f"{prefix}/{path}" if prefix and path else prefix or path


def visible(path: str, prefix: str) -> bool:
    """True if a member of folder `prefix` sees `path`: anything strictly inside it ('' sees all)."""
    return not prefix or path.startswith(prefix + "/")


def strip(path: str, prefix: str) -> str:
    """A box path as a member of folder `prefix` sees it."""
    return path[len(prefix) + 1 :] if prefix else path


def checked_changes(changes: list[Any], prefix: str) -> tuple[list[NewEntry], list[int]]:
    """The journal entries of a request's `changes` and the revision each was based on."""
    if len(changes) > MAX_CHANGES:
        raise TooLarge(f"send at most {MAX_CHANGES} changes at once (stage larger commits in parts)")
    entries = _entries(changes, prefix)
    if len({e.path for e in entries}) != len(entries):
        raise BadRequest("a commit names the same path twice")
    return entries, [int(c.get("parent_rev") or 0) for c in changes]


def _entries(changes: list[Any], prefix: str) -> list[NewEntry]:
    """Validate every change of a commit (see _entry).

    Puts of files with plain paths, nearly all of a large commit, take one fast pass: their block
    hashes are checked and converted together. Any other change, or any doubt, gets _entry's checks,
    so the errors are the same either way.
    """
    made: list[NewEntry | tuple[str, int, int, int, int]] = []
    hexes: list[str] = []
    for change in changes:
        plain = _plain_put(change, prefix, hexes)
        made.append(_entry(change, prefix) if plain is None else plain)
    joined = "".join(hexes)
    if not HEX_ALL.fullmatch(joined):
        return [_entry(change, prefix) for change in changes]  # raises, naming the bad hash
    blob = bytes.fromhex(joined)
    entries: list[NewEntry] = []
    at = 0
    for item in made:
        if isinstance(item, NewEntry):
            entries.append(item)
        else:
            path, size, mtime_ns, mode, count = item
            entries.append(NewEntry(path, "put", "file", size, mtime_ns, mode, blob[at : at + 32 * count], None))
            at += 32 * count
    return entries


def _plain_put(change: Any, prefix: str, hexes: list[str]) -> tuple[str, int, int, int, int] | None:
    """(path, size, mtime_ns, mode, number of blocks) of a file put whose every field is plainly valid, its
    hex hashes added to `hexes`; None for anything else."""
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
    return join(prefix, path), ints[0], ints[1], ints[2] & 0o7777, len(blocks)


def _entry(change: Any, prefix: str) -> NewEntry:
    """Validate one change of a commit and turn it into a journal entry."""
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
        blob = b"".join(digests(blocks))
    else:
        blob = b""
    if op == "put" and kind == "link":
        if not isinstance(target, str) or not target or len(target) > 4096 or "\x00" in target:
            raise BadRequest(f"{path}: a link needs a target of 1-4096 characters")
    else:
        target = None
    return NewEntry(join(prefix, path), op, kind, ints["size"] if kind == "file" else 0, ints["mtime_ns"],
                    ints["mode"] & 0o7777, blob, target)


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


def _in_box_dir(path: str) -> bool:
    """True for `.box` or a path through it, at any depth (a client's own folder: never synced)."""
    return f"/{path}/".find("/.box/") >= 0


__all__ = ["MAX_CHANGES", "MAX_HASHES", "checked_changes", "digests", "join", "strip", "visible"]
