"""A push's commit that may have landed without the push living to record it (SIGKILL, power cut).

Before a push sends its commit it writes `.box/pending-commit`, the commit's key, fsynced. Once
the index holds the commit, the file goes. Finding it later means the push died in between, so
`finish` asks the server whether a commit with that key exists (GET .../commits/by-key/{key}).
If not, the push never landed and the file is dropped: its changes are still local changes. If
it did, each path of that commit is recorded at its seq, as a pull of our own commit would: a
file that still holds what was sent is in sync; one edited (or removed) since is recorded at the
sent version, so the edit stays a local change for the next push. Without this, the next push
would name the old revisions and the server would refuse it (exit 4), as if another device had
moved on.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boxctl.errors import BoxError, NotFound
from boxctl.local.index import IndexEntry
from boxctl.local.workspace import LocalEntry

if TYPE_CHECKING:
    from boxctl.engine import Engine

NAME = "pending-commit"


def _path(root: Path) -> Path:
    return root / ".box" / NAME


def save(root: Path, key: str) -> None:
    """Make the commit `key` durable before the commit is sent (temp file, fsync, rename, fsync of .box/)."""
    final = _path(root)
    temp = final.with_name(NAME + ".tmp")
    with open(temp, "wb") as out:
        out.write(json.dumps({"key": key}).encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(root: Path) -> str | None:
    """The key of the pending commit, if a push died between sending it and recording it (None if none)."""
    try:
        return str(json.loads(_path(root).read_bytes())["key"])
    except FileNotFoundError:
        return None
    except (KeyError, TypeError, ValueError):  # (json.JSONDecodeError is a ValueError)
        clear(root)  # torn by a crash before its fsync: so its commit was never sent
        return None


def clear(root: Path) -> None:
    """Forget the pending commit (the index holds it, or it never landed). Need not be durable:
    finishing a commit the index already holds changes nothing."""
    with contextlib.suppress(FileNotFoundError):
        _path(root).unlink()


def finish(engine: Engine) -> int | None:
    """Record in the index a commit that a dead push sent but never recorded; its seq, or None.

    Costs nothing when no file is pending; otherwise one request, one page of the journal, and a
    hash of each file of that commit (only after a crash).
    """
    key = load(engine.root)
    if key is None:
        return None
    try:
        seq = engine.api.commit_by_key(engine.box_id, key)
    except NotFound:
        clear(engine.root)  # the commit never landed: its changes are still local changes
        return None
    page = engine.api.changes(engine.box_id, seq - 1, limit=1)  # pages hold whole commits
    entries = [e for e in page["entries"] if e["seq"] == seq]
    known = engine.index.get_many([e["path"] for e in entries])
    puts: list[IndexEntry] = []
    dels: list[str] = []
    for remote in entries:
        old = known.get(remote["path"])
        if old is not None and old.rev >= seq:
            continue  # already recorded (the file's removal was lost, not the index's commit)
        if remote["op"] == "delete":
            dels.append(remote["path"])  # a file put back since is a new local file
            continue
        local = engine.workspace.stat(remote["path"])
        puts.append(_entry(remote, local if local is not None and _holds(engine, local, remote) else None))
    with engine.index.transaction() as conn:
        engine.index.put(puts, conn)
        engine.index.delete(dels, conn)
        advanced = engine.index.cursor == seq - 1  # nothing else landed between our cursor and it
        if advanced:
            engine.index.set_cursor(seq, conn)
        elif engine.index.cursor < seq:
            engine.index.add_own_commit(seq, len(entries), conn)
    clear(engine.root)
    if advanced:
        with contextlib.suppress(BoxError):
            engine.api.ack(engine.box_id, engine.config.device_id, seq, engine.config.folder)
    return seq


def _holds(engine: Engine, local: LocalEntry, remote: dict[str, Any]) -> bool:
    """True if the disk still holds what the commit recorded at this path."""
    try:
        return engine.same_content(local, remote)
    except OSError:  # gone or unreadable since: not what the commit recorded
        return False


def _entry(remote: dict[str, Any], local: LocalEntry | None) -> IndexEntry:
    """The index entry of `remote` at its seq; with no matching `local`, a stat no file has (mtime -1),
    so the next scan hashes the file and finds the edit made since."""
    size, mtime_ns, inode, mode = ((local.size, local.mtime_ns, local.inode, local.mode) if local is not None
                                   else (remote["size"], -1, 0, remote["mode"]))
    return IndexEntry(remote["path"], remote["kind"], size, mtime_ns, inode, mode, int(remote["seq"]),
                      remote["content_hash"], b"".join(bytes.fromhex(h) for h in remote["blocks"]),
                      remote["target"], b"")
