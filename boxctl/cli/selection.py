"""`boxctl unpull`: leave a file or folder out of this folder's selective sync again (`pull PATH` adds one)."""

from __future__ import annotations

from typing import Annotated

import typer

from boxctl.cli.options import JsonOpt, QuietOpt, current
from boxctl.cli.session import open_engine
from boxctl.engine.unpull import unpull as leave_out


def unpull(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="The file or folder to stop syncing here.")],
    keep: Annotated[bool, typer.Option("--keep", help="Keep the local copy (no longer synced).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stop syncing a file or folder on this device and remove its local copy (it stays in the box)."""
    opts = current(ctx, quiet)
    p = opts.printer
    with open_engine(opts, json_mode=True) as engine:
        result = leave_out(engine, engine.box_path(path, opts.here()), keep)
    if json_out:
        p.json(result.as_json())
        return
    for kept in result.kept:
        p.warn(f"kept      {kept}")
    done = "kept here, no longer synced" if keep else f"{result.removed} file(s) removed here"
    p.say(f"{result.path} is no longer synced on this device ({done}; it stays in the box: "
          f"'boxctl pull {result.path}' brings it back)")
