"""`boxctl devices` and `boxctl devices revoke NAME`: the user's devices."""

from __future__ import annotations

from typing import Annotated

import typer

from boxctl.cli.options import JsonOpt, QuietOpt, ServerOpt, current, keep
from boxctl.cli.report import when
from boxctl.cli.session import account_api

devices_app = typer.Typer(help="List your devices, or revoke one.")


@devices_app.callback(invoke_without_command=True)
def devices(ctx: typer.Context, server: ServerOpt = None, json_out: JsonOpt = False,
            quiet: QuietOpt = False) -> None:
    """List your devices: name, kind, last seen, and how many changes each is behind."""
    opts = keep(ctx, current(ctx, quiet))
    if ctx.invoked_subcommand is not None:
        return
    p = opts.printer
    with account_api(opts, server) as api:
        listed = api.devices()
    if json_out:
        p.json({"devices": listed})
        return
    p.say(f"{'id':>4}  {'name':20} {'kind':8} {'last seen':19}  behind")
    for d in listed:
        seen = when(d["last_seen"]) if d["last_seen"] else "never"
        state = " (revoked)" if d["revoked"] else " (this device)" if d["current"] else ""
        p.say(f"{d['id']:>4}  {d['name']:20} {d['kind']:8} {seen:19}  {d['behind']}{state}")


@devices_app.command("revoke")
def devices_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Device name or id (see 'boxctl devices').")],
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Revoke one device's token at once: its next request is refused."""
    opts = current(ctx, quiet)
    with account_api(opts, server) as api:
        answer = api.revoke_device(name)
    if json_out:
        opts.printer.json(answer)
    else:
        opts.printer.say(f"revoked device {answer['name']} (id {answer['id']})")
