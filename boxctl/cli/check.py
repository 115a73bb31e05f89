"""`boxctl check [--read-data] [--repair]`: the index against the folder and the server's head."""

from __future__ import annotations

from typing import Annotated

import typer

from box_common.units import format_size
from boxctl.cli.options import JobsOpt, JsonOpt, Options, QuietOpt, current
from boxctl.cli.report import print_pull
from boxctl.cli.session import make_api, open_engine
from boxctl.config import BoxConfig, find_root, load_credentials
from boxctl.engine import check as checker
from boxctl.errors import IndexDamaged
from boxctl.output import Printer


def check(
    ctx: typer.Context,
    read_data: Annotated[bool, typer.Option("--read-data", help="Also reread every synced file and compare its "
                                            "blocks with the index's (finds bit rot that keeps size and mtime).")
                         ] = False,
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild a damaged index from the folder and the server, "
                                         "losing no local edit; with --read-data, put back damaged files.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    jobs: JobsOpt = None,
) -> None:
    """Compare the index with the folder and the server's head: exit 0 if all agree, 1 if a pull or a push
    would change something, 9 for damage that 'boxctl check --repair' fixes."""
    opts = current(ctx, quiet, None, jobs)
    if repair:
        _repair(opts, read_data, json_out)
        return
    try:
        with open_engine(opts, json_out) as engine:
            report = checker.check(engine, read_data)
    except IndexDamaged as exc:
        if not json_out:
            raise
        report = checker.CheckReport(index_damaged=exc.message)
    if json_out:
        opts.printer.json(report.as_json())
    else:
        _print_check(opts.printer, report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _print_check(p: Printer, report: checker.CheckReport) -> None:
    say = p.say
    for label in ("added", "modified", "deleted"):
        for path in getattr(report, label):
            say(f"{label:9} {path}")
    for r in report.rot:
        say(f"damaged   {r.path}: {r.bad_blocks} block(s) differ from the synced version, yet its size and "
            "mtime do not (bit rot?)")
    for problem in report.index_problems:
        say(f"index     {problem}")
    for o in report.out_of_step:
        say(f"diverged  {o.path}: {o.reason} (index rev {o.index_rev or '-'}, server rev {o.server_rev or '-'})")
    for path, reason in report.skipped:
        p.warn(f"not checked: {path}: {reason}")
    if report.behind:
        say(f"behind    {len(report.behind)} path(s) changed on the server since the last pull "
            f"(cursor {report.cursor}, head {report.head}): run 'boxctl pull'")
    read = f"; {report.files_read} file(s) reread, {format_size(report.bytes_read)}" if report.read_data else ""
    if report.damaged:
        say(f"damage found{read}: run 'boxctl check --repair{' --read-data' if report.rot else ''}'")
    elif report.differs:
        say(f"differences found{read}: 'boxctl sync' settles them")
    else:
        say(f"clean: the folder, its index and the server's head (commit {report.head}) agree{read}")


def _repair(opts: Options, read_data: bool, json_out: bool) -> None:
    root = find_root(opts.here())
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    api = make_api(opts, config.server, creds.for_device(config.device_name))
    p = opts.printer
    try:
        with p.progress(not json_out) as update:
            result = checker.repair(root, config, api, update, opts.jobs, read_data)
    finally:
        api.close()
    if json_out:
        p.json(result.as_json())
    else:
        if result.rebuilt:
            kept = f"; the damaged one is kept as {result.moved_to}" if result.moved_to else ""
            p.say(f"rebuilt the index ({result.reason}){kept}")
            p.say(f"{result.recorded} file(s) match the server's head (commit {result.cursor}): recorded as synced")
        for path in result.mended:
            p.say(f"mended    {path}")
        pulled = result.pulled
        if pulled and (pulled.written or pulled.deleted or pulled.conflicts or pulled.kept or pulled.refused):
            print_pull(p, pulled)
        for r in result.rot:
            if r.moved_to:
                p.say(f"restored  {r.path} from the server; the damaged bytes are kept as {r.moved_to!r}")
            else:
                p.warn(f"not restored: {r.path}: {r.error}")
        if not (result.rebuilt or result.mended or result.rot):
            p.say("nothing to repair" + ("" if read_data else " (add --read-data to reread every file)"))
    if result.exit_code:
        raise typer.Exit(result.exit_code)
