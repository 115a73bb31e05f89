"""`boxctl status`, `push`, `pull` and `sync`: the everyday commands."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated

import typer

from boxctl.cli.options import BwOpt, JobsOpt, JsonOpt, QuietOpt, current
from boxctl.cli.preview import DryRunOpt, show_pull_preview, show_sync_preview
from boxctl.cli.report import damaged_error, print_pull, print_push
from boxctl.cli.session import open_engine


def status(ctx: typer.Context, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show local changes since the last sync and how many remote changes wait."""
    opts = current(ctx, quiet)
    p = opts.printer
    with open_engine(opts, json_out) as engine:
        result = engine.status()
    if json_out:
        p.json(result.as_json())
        return
    for label, paths in (("added", result.added), ("modified", result.modified), ("deleted", result.deleted)):
        for path in paths:
            p.say(f"{label:9} {path}")
    for path, reason in result.skipped:
        p.warn(f"not synced: {path}: {reason}")
    if result.ignored:
        origin = "synced with the box" if result.ignore_synced else "of this folder"
        p.say(f".boxignore ({origin}) leaves out {len(result.ignored)} path(s); its rules: "
              + ", ".join(result.ignore_rules[:10]) + (" ..." if len(result.ignore_rules) > 10 else ""))
        for path in result.ignored[:20]:
            p.say(f"ignored   {path}")
        if len(result.ignored) > 20:
            p.say(f"          ... and {len(result.ignored) - 20} more ('boxctl status --json' lists them all)")
    if result.clean:
        p.say("no local changes")
    waiting = result.remote_waiting
    p.say(f"{waiting} remote change(s) waiting" + (": run 'boxctl pull'" if waiting else ""))


def push(
    ctx: typer.Context,
    message: Annotated[str, typer.Option("-m", "--message", help="Commit message.")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be pushed; send nothing.")] = False,
    no_delta: Annotated[bool, typer.Option("--no-delta", help="Send changed blocks whole, never as deltas.")] = False,
    repair_blocks: Annotated[bool, typer.Option(
        "--repair-blocks", help="Offer the server every block of the synced files again: heals blocks it lost.")
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Upload the blocks the server lacks and commit all local changes atomically."""
    opts = replace(current(ctx, quiet, bwlimit, jobs), delta=not no_delta)
    p = opts.printer
    with open_engine(opts, json_out) as engine:
        engine.check_can_push()  # a viewer is refused before any upload
        started = time.monotonic()
        repaired = engine.repair_blocks() if repair_blocks and not dry_run else None
        result = engine.push(message, dry_run=dry_run)
        elapsed = time.monotonic() - started
    if json_out:
        p.json(result.as_json() | {"seconds": round(elapsed, 3)}
               | ({"repair": repaired.as_json()} if repaired else {}))
        return
    if repaired is not None:
        p.say(f"repair: {repaired.blocks_missing} of {repaired.blocks_checked} block(s) missing on the server, "
              f"{repaired.blocks_sent} sent again" + (f"; not found here any more in {len(repaired.unavailable)} "
                                                     "file(s)" if repaired.unavailable else ""))
    print_push(p, result, elapsed, dry_run)


def pull(
    ctx: typer.Context,
    paths: Annotated[list[str] | None,
                     typer.Argument(help="Fetch only these files or folders (sync on demand).")] = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Apply remote changes; a file changed on both sides keeps both versions."""
    opts = current(ctx, quiet, bwlimit, jobs)
    with open_engine(opts, json_out) as engine:
        result = engine.pull(paths or None, opts.here(), dry_run=dry_run)
    if dry_run:
        show_pull_preview(opts.printer, result, json_out)
        return
    if json_out:
        opts.printer.json(result.as_json())
    else:
        print_pull(opts.printer, result)
    if result.damaged:
        raise damaged_error(result.damaged)


def sync(
    ctx: typer.Context,
    message: Annotated[str, typer.Option("-m", "--message", help="Commit message.")] = "",
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Pull, then push: one command for cron and CI."""
    opts = current(ctx, quiet, bwlimit, jobs)
    p = opts.printer
    with open_engine(opts, json_out) as engine:
        pulled = engine.pull(dry_run=dry_run)
        started = time.monotonic()
        pushed = engine.push(message, dry_run=dry_run)
        elapsed = time.monotonic() - started
    if dry_run:
        show_sync_preview(p, pulled, pushed, json_out)
        return
    if json_out:
        p.json({"pull": pulled.as_json(), "push": pushed.as_json()})
    else:
        print_pull(p, pulled)
        print_push(p, pushed, elapsed)
    if pulled.damaged:
        raise damaged_error(pulled.damaged)
