"""`boxctl link PATH [--expires 7d]`, `link ls` and `link rm URL|ID`: read-only links to a file or folder."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from typing import Annotated
from urllib.parse import urlsplit

import typer
from typer.core import TyperGroup

from boxctl.cli.options import JsonOpt, QuietOpt, current
from boxctl.cli.session import any_api, open_folder
from boxctl.errors import UsageError
from boxctl.timeparse import UNITS

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


class _LinkGroup(TyperGroup):
    """`boxctl link PATH` makes a link; `link ls` and `link rm` manage them (use ./ls for a file named ls)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


link_app = typer.Typer(cls=_LinkGroup, no_args_is_help=True,
                       help="Read-only links to a file or folder: 'boxctl link PATH [--expires 7d]', "
                            "'boxctl link ls', 'boxctl link rm URL|ID'.")


def parse_duration(text: str) -> float:
    """Seconds in '90s', '30m', '12h', '7d' or '2w'."""
    match = DURATION.match(text.lower())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"cannot read the duration {text!r}: use a number and a unit, like 30m, 12h, 7d or 2w")
    return float(match.group(1)) * UNITS[match.group(2)]


@link_app.command("create", hidden=True)
def link_create(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A file or folder of this synced folder ('.' for all of it).")],
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime, like 12h, 7d or 2w.")] = None,
) -> None:
    """Make a read-only link to PATH and print its URL alone on stdout."""
    seconds = parse_duration(expires) if expires else None
    with open_folder(current(ctx)) as folder:
        rel = folder.box_path(path)
        answer = folder.api.create_link(folder.box_id, rel, seconds)
        url = folder.config.server + answer["url_path"]
    sys.stdout.write(url + "\n")


@link_app.command("ls")
def link_ls(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option("--server", help="Outside a synced folder: the server.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List your links (in a synced folder: those of its box), never their secret URLs."""
    opts = current(ctx, quiet)
    p = opts.printer
    with any_api(opts, server) as (api, box_id):
        links = api.links(box_id)
    if json_out:
        p.json({"links": links})
        return
    if not links:
        p.say("no links")
    for link in links:
        expires = "never" if not link["expires"] else time.strftime("%Y-%m-%d %H:%M", time.localtime(link["expires"]))
        p.say(f"{link['id']:>5}  {link['state']:8} expires {expires:16}  {link['box']}:/{link['path']}"
              f"  (by {link['creator']})")


@link_app.command("rm")
def link_rm(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The link's URL, or its id from 'boxctl link ls'.")],
    server: Annotated[str | None, typer.Option("--server", help="Outside a synced folder: the server.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Revoke a link at once: its page answers 410 from now on."""
    opts = current(ctx, quiet)
    if re.fullmatch(r"[0-9]{1,18}", ref):
        key = ref
    else:
        parts = urlsplit(ref)
        match = re.search(r"/l/([A-Za-z0-9_-]+)", parts.path)
        if not match:
            raise UsageError(f"{ref!r} is neither a link URL nor a link id")
        key = hashlib.sha256(match.group(1).encode()).hexdigest()  # the token itself never travels again
        if parts.scheme and parts.netloc and not server:
            server = f"{parts.scheme}://{parts.netloc}"
    with any_api(opts, server) as (api, _):
        answer = api.revoke_link(key)
    if json_out:
        opts.printer.json(answer)
    else:
        opts.printer.say(f"revoked link {answer['id']}")
