"""Reports shared by several commands: what a pull did, and files it could not write (damaged data)."""

from __future__ import annotations

import time
from typing import Any

from box_common.units import format_size
from boxctl.engine import PullResult, PushResult
from boxctl.errors import IntegrityError
from boxctl.output import Printer

HEAL = ("run 'box-server check --data DIR' on the server, or 'boxctl push --repair-blocks' from a device "
        "that has these files, then pull again")


def when(epoch: float) -> str:
    """A time as local 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def print_pull(p: Printer, result: PullResult) -> None:
    """The human lines of a pull: each path added, modified, deleted, in conflict, kept or refused (the
    words of status and push)."""
    added = set(result.added)
    for path in result.written:
        p.say(f"{'added' if path in added else 'modified':9} {path}")
    for path in result.deleted:
        p.say(f"deleted   {path}")
    for c in result.conflicts:
        p.say(f"conflict  {c['path']}: your version kept as {c['copy']!r}")
    for path in result.kept:
        p.say(f"kept      {path} (changed here; it will be pushed)")
    for path, reason in result.refused:
        p.warn(f"refused   {path}: {reason}")
    print_damaged(p, result.damaged)
    if not (result.written or result.deleted or result.conflicts or result.kept or result.damaged):
        p.say("already up to date")
    if result.conflicts:
        p.say("conflicted copies are new files: run 'boxctl push' to sync them")


def print_push(p: Printer, result: PushResult, elapsed: float, dry_run: bool = False) -> None:
    """The human lines of a push (alone or in a sync): each path added, modified or deleted, then the commit."""
    for path, reason in result.skipped:
        p.warn(f"not pushed: {path}: {reason}")
    if not result.changes:
        ignored = len(result.ignored)
        p.say("nothing to push" + (f" ({ignored} path(s) left out by .boxignore: see 'boxctl status')"
                                   if ignored else ""))
        return
    verb = "would push" if dry_run else "pushed"
    for c in result.changes:
        p.say(f"{c.status:9} {c.path}")
    tail = "" if dry_run else (f" as commit {result.seq}: {result.blocks_sent} new block(s), "
                               f"{format_size(result.bytes_sent)} sent in {elapsed:.1f}s")
    p.say(f"{verb} {len(result.changes)} change(s){tail}")


def print_damaged(p: Printer, damaged: list[dict[str, Any]]) -> None:
    """The human lines for files a pull could not write because their data is damaged on the server."""
    for d in damaged:
        p.warn(f"damaged   {d['path']}: {d['reason']}")


def damaged_error(damaged: list[dict[str, Any]]) -> IntegrityError:
    """The error (exit 9) a pull ends with when some files could not be written."""
    names = ", ".join(d["path"] for d in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
    return IntegrityError(f"{len(damaged)} file(s) not pulled, their data is damaged on the server ({names}); "
                          f"every other file was applied; {HEAL}",
                          blocks=sorted({b for d in damaged for b in d["blocks"]}))
