"""`boxctl log`, `ls` and `restore`: what the box held, and bringing it back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from box_common.units import format_size
from boxctl.cli.options import BwOpt, JobsOpt, JsonOpt, QuietOpt, check_number, current
from boxctl.cli.preview import DryRunOpt, confirm_rewind, show_restore_preview
from boxctl.cli.report import damaged_error, when
from boxctl.cli.session import open_engine
from boxctl.errors import NotFound, UsageError
from boxctl.timeparse import parse_time

MAX_LOG = 10_000  # the most entries the server gives in one answer


def log(
    ctx: typer.Context,
    path: Annotated[str | None, typer.Argument(help="Show the revisions of this file or folder.")] = None,
    limit: Annotated[int, typer.Option("-n", help=f"How many entries (at most {MAX_LOG:,}).")] = 20,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show commits (who, device, when, message, paths) or the revisions of one path."""
    opts = current(ctx, quiet)
    p = opts.printer
    check_number(limit, "-n", 1, MAX_LOG)
    with open_engine(opts, json_out) as engine:
        data = engine.log(path, limit, opts.here())
        if "revisions" in data and not data["revisions"]:
            raise NotFound(f"{path}: no such path in box {engine.config.owner}/{engine.config.box_name}, now or "
                           "ever; see 'boxctl ls'")
    if json_out:
        p.json(data)
        return
    if "revisions" in data:
        for r in data["revisions"]:
            what = "deleted" if r["op"] == "delete" else format_size(r["size"]) if r["kind"] == "file" else r["kind"]
            p.say(f"rev {r['rev']:<6} {when(r['time'])}  {r['user']}@{r['device'] or '-'}  {r['path']}  {what}")
        return
    for c in data.get("commits", []):
        p.say(f"commit {c['seq']}  {when(c['time'])}  {c['user']}@{c['device'] or '-'}  {c['message']}")
        for e in c["paths"][:20]:  # a server from before `change` was sent says only put or delete
            change = e.get("change") or ("deleted" if e["op"] == "delete" else "put")
            p.say(f"    {change:9} {e['path']}")
        if c["changes"] > 20:
            p.say(f"    ... and {c['changes'] - 20} more")


def restore(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="File or folder to restore ('.' for the whole box).")],
    rev: Annotated[int | None, typer.Option("--rev", help="Commit number (see 'boxctl log').")] = None,
    at: Annotated[str | None, typer.Option("--at", help="A time: '2026-11-25 10:15', '@EPOCH' or '2h'.")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Write it here instead of changing the box.")] = None,
    dry_run: DryRunOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Rewind the whole box ('.') without asking.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Bring a file, deleted file, folder or the whole box back to an earlier version."""
    opts = current(ctx, quiet, bwlimit, jobs)
    p = opts.printer
    check_number(rev, "--rev", 0)
    if (rev is None) == (at is None):
        raise UsageError("give exactly one of --rev REV or --at TIME")
    moment = parse_time(at) if at is not None else None
    here = opts.here()
    dest = (here / to).resolve() if to else None
    with open_engine(opts, json_mode=True) as engine:  # no progress bar: it would draw over the question
        whole = dest is None and engine.box_path(path, here) == ""
        preview = engine.restore_preview(path, rev, moment, dest, here) if dry_run or whole else None
        box = f"{engine.config.owner}/{engine.config.box_name}"
    if dry_run and preview is not None:
        show_restore_preview(p, preview, json_out)
        return
    if preview is not None:
        confirm_rewind(p, box, preview, yes)
    with open_engine(opts, json_out) as engine:
        result = engine.restore(path, rev, moment, dest, here)
    damaged = result.get("pull", {}).get("damaged")
    if json_out:
        p.json(result)
        if damaged:
            raise damaged_error(damaged)
        return
    if damaged:
        raise damaged_error(damaged)
    if to is not None:
        for refused in result["refused"]:
            p.warn(f"refused   {refused['path']}: {refused['reason']}")
        p.say(f"wrote {result['restored']} as of commit {result['seq']} to {result['to']} ({result['files']} file(s))")
    elif result["seq"] is None:
        p.say(f"{result['restored']} is already as it was at commit {result['from_seq']}")
    else:
        p.say(f"restored {result['restored']} to commit {result['from_seq']} as new commit {result['seq']} "
              f"({result['changes']} change(s))")


def ls(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="Folder or file in the box.")] = "",
    remote: Annotated[bool, typer.Option("--remote", help="List what the server holds (the default).")] = True,
    at: Annotated[int | None, typer.Option("--rev", help="As of this commit.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List what the box holds on the server, without downloading it."""
    opts = current(ctx, quiet)
    p = opts.printer
    check_number(at, "--rev", 0)
    with open_engine(opts, json_out) as engine:
        prefix = engine.box_path(path, opts.here()) if path else ""
        data = engine.tree(prefix, at)
        if prefix and not data["entries"]:
            when = "now" if at is None else f"at commit {data['seq']}"
            raise NotFound(f"{path}: no such file or folder in box {engine.config.owner}/{engine.config.box_name} "
                           f"{when}; see 'boxctl ls' and 'boxctl log {path}'")
    if json_out:
        p.json(data)
        return
    for e in data["entries"]:
        size = format_size(e["size"]) if e["kind"] == "file" else e["kind"]
        p.say(f"{size:>10}  rev {e['seq']:<6} {e['path']}" + ("/" if e["kind"] == "dir" else ""))
