"""`boxctl diff` and `boxctl conflicts`: looking at what changed and at what a conflict kept, changing nothing."""

from __future__ import annotations

from typing import Annotated

import typer

from boxctl.cli.options import JsonOpt, QuietOpt, current
from boxctl.cli.session import open_engine
from boxctl.engine.conflicts import in_folder
from boxctl.engine.diff import between_revisions, describe, parse_revs, since_sync
from boxctl.output import Printer


def diff(
    ctx: typer.Context,
    path: Annotated[str | None, typer.Argument(help="Only this file or folder.")] = None,
    revs: Annotated[str | None, typer.Option(
        "--rev", metavar="A[..B]", help="Between commits A and B (A alone, or A..: from A to the head). Without "
        "it: between the last sync and the folder.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show what changed: a unified diff for text files, one line for other files."""
    opts = current(ctx, quiet)
    p = opts.printer
    span = parse_revs(revs) if revs is not None else None
    with open_engine(opts, json_mode=True) as engine:
        prefix = engine.box_path(path, opts.here()) if path else ""
        if span is None:
            labels, changes = ("last sync", "folder"), since_sync(engine, prefix)
            ends: dict[str, int | str] = {"from": "last sync", "to": "folder"}
        else:
            a, b, changes = between_revisions(engine, prefix, *span)
            labels, ends = (f"commit {a}", f"commit {b}"), {"from": a, "to": b}
        if json_out:
            p.json(ends | {"changes": [d.as_json() for d in changes]})
            return
        for d in changes:
            _lines(p, describe(engine, d, labels))
    if not changes:
        p.say("no changes")


def _lines(p: Printer, lines: list[str]) -> None:
    """A diff's lines: exact bytes when piped (for `patch`), one safe line each on a terminal."""
    if p.out.is_terminal:
        for line in lines:
            p.say(line.rstrip("\n").expandtabs())
    elif not p.quiet:
        p.raw("".join(lines).encode())


def conflicts(ctx: typer.Context, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the conflicted copies in the folder, each with the file it belongs to."""
    opts = current(ctx, quiet)
    p = opts.printer
    with open_engine(opts, json_mode=True) as engine:
        copies = in_folder(engine)
    if json_out:
        p.json({"conflicts": [c.as_json() for c in copies]})
        return
    for c in copies:
        gone = "" if c.original_exists else " (no longer there)"
        p.say(c.copy)
        p.say(f"    of {c.path}{gone}: kept from {c.device} at {c.time}")
    p.say(f"{len(copies)} conflicted cop{'y' if len(copies) == 1 else 'ies'}" + (
        ": compare each with its file, keep what you want, delete the copy, then push" if copies else ""))
