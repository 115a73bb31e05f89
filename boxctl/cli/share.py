"""`boxctl share add|ls|rm`: share this box, or one folder of it, with other users."""

from __future__ import annotations

from typing import Annotated

import typer

from boxctl.cli.options import JsonOpt, QuietOpt, current
from boxctl.cli.session import open_folder
from boxctl.errors import UsageError

share_app = typer.Typer(no_args_is_help=True, help="Share this box, or one folder of it, with other users.")


@share_app.command("add")
def share_add(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user to share with.")],
    path: Annotated[str | None, typer.Argument(help="A folder to share (default: the whole box).")] = None,
    role: Annotated[str, typer.Option("--role", help="viewer (read only) or editor (may push).")] = "viewer",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Give USER viewer or editor access to the whole box, or to one folder (which becomes their root)."""
    opts = current(ctx, quiet)
    p = opts.printer
    if role not in ("viewer", "editor"):
        raise UsageError("--role must be viewer or editor")
    with open_folder(opts) as folder:
        rel = folder.box_path(path) if path else ""
        answer = folder.api.share(folder.box_id, user, rel, role)
    if json_out:
        p.json(answer)
        return
    what = f"folder {answer['path']!r} of {folder.label}" if answer["path"] else f"box {folder.label}"
    verb = "shared" if answer.get("created") else "changed the share of"
    p.say(f"{verb} {what} with {answer['user']} as {answer['role']}")
    if answer["path"]:
        p.say(f"they clone it with: boxctl clone {folder.config.server} {folder.label}/{answer['path']}")
    else:
        p.say(f"they clone it with: boxctl clone {folder.config.server} {folder.label}")


@share_app.command("ls")
def share_ls(ctx: typer.Context, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List who has access to this box, with their role and folder."""
    opts = current(ctx, quiet)
    with open_folder(opts) as folder:
        members = folder.api.members(folder.box_id)
    if json_out:
        opts.printer.json({"box": folder.label, "members": members})
        return
    for m in members:
        where = m["path"] or "(whole box)"
        you = "  (you)" if m.get("you") else ""
        opts.printer.say(f"{m['role']:7} {m['user']:20} {where}{you}")


@share_app.command("rm")
def share_rm(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user whose access ends.")],
    path: Annotated[str | None, typer.Argument(help="The shared folder (default: any share of USER).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stop sharing with USER: their next request is refused."""
    opts = current(ctx, quiet)
    with open_folder(opts) as folder:
        where = folder.box_path(path) if path is not None else None
        answer = folder.api.unshare(folder.box_id, user, where)
    if json_out:
        opts.printer.json(answer)
        return
    opts.printer.say(f"{answer['user']} no longer has access to {folder.label}" + (f" folder {path!r}" if path else ""))
