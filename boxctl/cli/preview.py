"""What a command would do before it does it: the `--dry-run` reports of pull, sync and restore, and the
question `restore .` asks before it rewinds the whole box for every device."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from boxctl.engine import PullResult, PushResult
from boxctl.engine.restore import RestorePreview
from boxctl.errors import BoxError, UsageError
from boxctl.output import Printer

NOTHING_CHANGED = "dry run: nothing was changed"
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]


def show_pull_preview(p: Printer, result: PullResult, json_out: bool) -> None:
    """What `pull --dry-run` prints: its --json document (pull's own, with "dry_run": true), or lines."""
    if json_out:
        p.json(result.as_json() | {"dry_run": True})
    else:
        print_pull_preview(p, result)


def show_sync_preview(p: Printer, pulled: PullResult, pushed: PushResult, json_out: bool) -> None:
    """What `sync --dry-run` prints: the pull's and the push's previews."""
    if json_out:
        p.json({"pull": pulled.as_json() | {"dry_run": True}, "push": pushed.as_json(), "dry_run": True})
    else:
        print_pull_preview(p, pulled)
        print_push_preview(p, pushed)


def show_restore_preview(p: Printer, preview: RestorePreview, json_out: bool) -> None:
    """What `restore --dry-run` prints."""
    if json_out:
        p.json(preview)
    else:
        print_restore_preview(p, preview)


def print_pull_preview(p: Printer, result: PullResult) -> None:
    """The human lines of `pull --dry-run`."""
    for path in result.written:
        p.say(f"would write   {path}")
    for path in result.deleted:
        p.say(f"would delete  {path}")
    for c in result.conflicts:
        p.say(f"conflict      {c['path']}: your version would be kept as {c['copy']!r}")
    for path in result.kept:
        p.say(f"would keep    {path} (changed here; it would be pushed)")
    for path, reason in result.refused:
        p.warn(f"would refuse  {path}: {reason}")
    if not (result.written or result.deleted or result.conflicts or result.kept):
        p.say("already up to date")


def print_push_preview(p: Printer, result: PushResult) -> None:
    """The human lines of the push half of `sync --dry-run`."""
    for c in result.changes:
        p.say(f"would push    {c.path} ({c.status})")
    if not result.changes:
        p.say("nothing to push")


def print_restore_preview(p: Printer, result: RestorePreview) -> None:
    """The human lines of `restore --dry-run` (into the box, or `--to` a folder)."""
    if "to" in result:
        for path in result["paths"]:
            p.say(f"would write   {path}")
        p.say(f"would write {result['files']} path(s) of {result['restored']} as of commit {result['seq']} "
              f"to {result['to']}; {NOTHING_CHANGED}")
        return
    rows = ([(path, "added back") for path in result.get("added", [])]
            + [(path, "modified") for path in result.get("modified", [])]
            + [(path, "deleted") for path in result.get("deleted", [])])
    for path, change in rows:
        p.say(f"would restore {path} ({change})")
    if not result.get("changes"):
        p.say(f"{result['restored']} is already as it was at commit {result['from_seq']}")
    else:
        p.say(f"would restore {result['restored']} to commit {result['from_seq']} as one new commit "
              f"({counts(result)}); {NOTHING_CHANGED}")


def counts(result: RestorePreview) -> str:
    """`2 added back, 1 modified, 3 deleted` for a restore preview."""
    parts = [f"{len(result.get('added', []))} added back", f"{len(result.get('modified', []))} modified",
             f"{len(result.get('deleted', []))} deleted"]
    return ", ".join(part for part in parts if not part.startswith("0 "))


def confirm_rewind(p: Printer, box: str, preview: RestorePreview, yes: bool) -> None:
    """Before `restore .` rewinds every device's copy of `box`: ask on a terminal, refuse (exit 2) without
    one unless `yes`; an answer other than yes cancels (exit 1). Nothing has changed when it raises."""
    if yes or not preview.get("changes"):
        return
    what = (f"restore . rewinds the whole box {box} to commit {preview['from_seq']} for every device: "
            f"{preview['changes']} path(s) change ({counts(preview)})")
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"{what}; pass --yes to do it (or --dry-run to list them); nothing was changed")
    p.err.print(f"{what}. Go on? [y/N] ", markup=False, end="")
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise BoxError("restore cancelled; nothing was changed")
