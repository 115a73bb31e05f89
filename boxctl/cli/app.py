"""The `boxctl` command: the root options, every command family in the order `--help` lists them,
and the edge where errors become one line on stderr and an exit code."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from boxctl import __version__
from boxctl.cli import artifacts, check, devices, history, inspect, link, selection, setup, share, sync, watch
from boxctl.cli.options import Options, QuietOpt
from boxctl.config import check_ca_cert
from boxctl.errors import BoxError, UsageError
from boxctl.output import Printer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Box: keep a folder in sync, with every version.",
                  epilog="The server's commands: 'boxctl serve' and 'boxctl admin' run 'box-server serve' and "
                  "'box-server admin'.")


def _show_version(value: bool) -> None:
    if value:
        Printer().out.print(f"boxctl {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    directory: Annotated[Path | None, typer.Option("-C", help="Run as if started in this folder.")] = None,
    quiet: QuietOpt = False,
    timeout: Annotated[float, typer.Option("--timeout", envvar="BOX_TIMEOUT",
                                           help="Seconds to wait for the server before retrying.")] = 60.0,
    retries: Annotated[int, typer.Option("--retries", envvar="BOX_RETRIES",
                                         help="Retries of a failed request (backoff with jitter).")] = 6,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="Show the version and exit.")] = False,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert", envvar="BOX_CA_CERT",
                                                 help="Trust a private CA (a PEM file) for the server's TLS.")] = None,
) -> None:
    """Box: a Dropbox-style synced folder with a git/rsync-style command line."""
    if timeout <= 0 or not 0 <= retries <= 100:
        raise UsageError("--timeout must be positive and --retries between 0 and 100")
    if ca_cert is not None:
        os.environ["BOX_CA_CERT"] = str(check_ca_cert(ca_cert))  # every transport of this run trusts it
    ctx.obj = Options(quiet=quiet, directory=directory, timeout=timeout, retries=retries)


for command in (setup.login, setup.init, setup.clone, sync.status, sync.push, sync.pull, sync.sync,
                history.log, history.restore, history.ls, check.check, watch.watch):
    app.command()(command)
for command in (artifacts.put, artifacts.get, artifacts.cat, inspect.diff, inspect.conflicts, selection.unpull):
    app.command()(command)
app.add_typer(devices.devices_app, name="devices")
app.add_typer(share.share_app, name="share")
app.add_typer(link.link_app, name="link")

MULTI_OPTIONS = ("--only",)


def expand_multi_options(args: list[str]) -> list[str]:
    """Let `--only A B C` mean `--only A --only B --only C` (click options take one value each)."""
    expanded: list[str] = []
    current: str | None = None
    for arg in args:
        if arg == "--":
            current = None
        elif arg in MULTI_OPTIONS:
            current = arg
            continue
        elif arg.startswith("-"):
            current = None
        elif current is not None:
            expanded += [current, arg]
            continue
        expanded.append(arg)
    return expanded


def main() -> None:
    """Entry point: run the app, turning every BoxError into one line on stderr and its exit code."""
    # Click handles usage errors itself (exit 2); everything we raise becomes one line here.
    p = Printer()
    try:
        app(args=expand_multi_options(sys.argv[1:]))
    except BoxError as exc:
        p.warn(f"error: {exc.message}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        p.warn("interrupted")
        sys.exit(130)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        p.warn(f"error: {exc.strerror or exc}{where}")
        sys.exit(1)
