"""`boxctl put`, `get` and `cat`: files into and out of a box without a synced folder (CI artifacts).

They use the login's credentials (`boxctl login`, or BOX_SERVER and BOX_TOKEN in the environment) and
make no `.box/` anywhere. Where paths land is the engine's rule (boxctl/engine/put.py and get.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from box_common.units import format_size
from boxctl.cli.options import BwOpt, JobsOpt, JsonOpt, Options, QuietOpt, current
from boxctl.cli.session import make_api
from boxctl.config import load_credentials
from boxctl.engine.get import Get, file_bytes
from boxctl.engine.put import Put
from boxctl.engine.remote import RemoteBox, parse_ref
from boxctl.errors import BoxError, UsageError
from boxctl.timeparse import parse_time

RevOpt = Annotated[int | None, typer.Option("--rev", help="As of this commit (see 'boxctl log').")]
AtOpt = Annotated[str | None, typer.Option("--at", help="As of a time: '2026-11-25 10:15', '@EPOCH' or '2h'.")]
ServerOpt = Annotated[str | None, typer.Option(
    "--server", help="Server URL (default: BOX_SERVER, else the server you logged in to).")]
RefArg = Annotated[str, typer.Argument(metavar="OWNER/BOX/PATH", help="What to fetch, e.g. alice/ci/builds/42.")]


@contextmanager
def open_remote(opts: Options, server: str | None, ref: str, create: bool = False) -> Iterator[RemoteBox]:
    """The box named by `ref` (OWNER/BOX[/PATH]) on `server` (else BOX_SERVER, else the one login)."""
    parsed = parse_ref(ref)  # a bad reference is a usage error before any credentials are looked for
    creds = load_credentials(server)
    api = make_api(opts, creds.server, creds.token)
    try:
        yield RemoteBox(api, parsed, create)
    finally:
        api.close()


def _moment(rev: int | None, at: str | None) -> float | None:
    if rev is not None and at is not None:
        raise UsageError("give at most one of --rev REV or --at TIME")
    if rev is not None and rev < 0:
        raise UsageError(f"--rev must be a commit number (0 or more), not {rev}")
    return parse_time(at) if at is not None else None


def put(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(
        metavar="LOCAL... OWNER/BOX[/PATH]",
        help="Files or folders, then where they go. A single LOCAL becomes PATH (a file given for a folder "
        "PATH goes inside it); with several LOCALs, the box root, or PATH ending in '/', each goes inside "
        "PATH under its own name.")],
    message: Annotated[str, typer.Option("-m", "--message", help="Commit message.")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be put; send nothing.")] = False,
    create: Annotated[bool, typer.Option("--create", help="Make the box first if it does not exist (yours only).")
                      ] = False,
    no_delta: Annotated[bool, typer.Option("--no-delta", help="Send changed blocks whole, never as deltas.")] = False,
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Upload files or folders into a path of a box as one commit, without a synced folder (CI artifacts)."""
    opts = replace(current(ctx, quiet, bwlimit, jobs), delta=not no_delta)
    if len(paths) < 2:
        raise UsageError("give LOCAL... then OWNER/BOX[/PATH], e.g. 'boxctl put dist alice/ci/builds/42'")
    p = opts.printer
    started = time.monotonic()
    with open_remote(opts, server, paths[-1], create and not dry_run) as remote, p.progress(not json_out) as update:
        sources = [opts.here() / s for s in paths[:-1]]  # relative to -C DIR, if given
        result = Put(remote, update, opts.jobs, opts.delta).run(sources, message, dry_run)
    elapsed = time.monotonic() - started
    if json_out:
        p.json(result.as_json() | {"seconds": round(elapsed, 3)})
        return
    where = f"{result.box}/{result.dest}" if result.dest else result.box
    changed = [i for i in result.items if i.status != "unchanged"]
    for item in changed:
        p.say(f"{item.status:9} {item.path}")
    if not changed:
        p.say(f"nothing to put: {where} already holds all of it")
    elif dry_run:
        p.say(f"would put {len(changed)} change(s) into {where}")
    else:
        stats = result.stats
        p.say(f"put {len(changed)} change(s) into {where} as commit {result.seq}: {stats.blocks_sent} new block(s), "
              f"{format_size(stats.bytes_sent)} sent in {elapsed:.1f}s")


def get(
    ctx: typer.Context,
    ref: RefArg,
    dest: Annotated[Path | None, typer.Argument(
        help="Where to write (default: its own name here). A file goes inside DEST if DEST is a folder; a "
        "folder's contents go into DEST.")] = None,
    rev: RevOpt = None,
    at: AtOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", "-f", help="Replace local files that differ (never a folder by a file or the reverse).")] = False,
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Download a file or folder of a box, as it is or was, without a synced folder (CI artifacts)."""
    opts = current(ctx, quiet, bwlimit, jobs)
    when = _moment(rev, at)
    p = opts.printer
    with open_remote(opts, server, ref) as remote, p.progress(not json_out) as update:
        result = Get(remote, update, opts.jobs).run(dest, opts.here(), rev, when, force)
    if json_out:
        p.json(result.as_json())
    else:
        for path, reason in result.refused:
            p.warn(f"refused   {path}: {reason}")
        kept = f", {len(result.unchanged)} already there" if result.unchanged else ""
        p.say(f"got {result.path} (commit {result.seq}) into {result.dest}: {len(result.written)} written "
              f"({format_size(result.bytes)}){kept}")
    if result.refused:
        raise BoxError(f"{len(result.refused)} path(s) not written (listed above); every other path was written")


def cat(
    ctx: typer.Context,
    ref: RefArg,
    rev: RevOpt = None,
    at: AtOpt = None,
    server: ServerOpt = None,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Write one file of a box to stdout, as it is or was (binary-safe)."""
    opts = current(ctx, False, bwlimit, jobs)
    when = _moment(rev, at)
    p = opts.printer
    with open_remote(opts, server, ref) as remote:
        try:
            for chunk in file_bytes(remote, rev, when, opts.jobs):
                p.raw(chunk)
        except BrokenPipeError:
            # The reader stopped early (`boxctl cat F | head`): what it asked for was written, as with cat(1).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            raise typer.Exit(0) from None
