"""`boxctl watch`: keep a folder in sync both ways, live, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from boxctl.api import Api
from boxctl.cli.options import BwOpt, JobsOpt, QuietOpt, current
from boxctl.config import BoxConfig, find_root, load_credentials
from boxctl.engine import Engine
from boxctl.errors import BoxError
from boxctl.terminal import printable
from boxctl.transport import Transport

POLL_TIMEOUT = 30.0


def open_log(path: Path) -> TextIO:
    """The log file, opened to append one line at a time; its folder is made if missing (the README's
    ~/.local/state/box/ does not exist on a fresh account)."""
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", buffering=1, encoding="utf-8")  # closed by watch as it ends
    except OSError as exc:
        raise BoxError(f"cannot open the log file {path}: {exc.strerror or exc}") from None


def watch(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="The synced folder (default: the current one).")] = Path("."),
    log_file: Annotated[Path | None, typer.Option("--log-file", help="Append one line per synced change.")] = None,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Keep the folder in sync both ways, live, until Ctrl-C or SIGTERM."""
    opts = current(ctx, quiet, bwlimit, jobs)
    from boxctl.watch import Watcher  # watchdog: loaded only by the one command that needs it

    p = opts.printer
    root = find_root(opts.here() / directory)
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    token = creds.for_device(config.device_name)
    log_out = open_log(log_file) if log_file else None

    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if log_out is not None:
            log_out.write(f"{stamp} {printable(line)}\n")
        p.say(f"{stamp} {line}")

    def status_line(line: str) -> None:
        if log_out is not None:
            log_out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {printable(line)}\n")
        p.status(line)

    stop = threading.Event()

    def make_engine() -> Engine:
        # Few quick retries: watch's own backoff takes over, and a stop ends any wait at once.
        transport = Transport(config.server, token, timeout=opts.timeout, retries=min(opts.retries, 2),
                              bwlimit=opts.bwlimit, max_backoff=2.0, stop=stop)
        return Engine(root, config, Api(transport), threads=opts.jobs)

    poll_api = Api(Transport(config.server, token, retries=0, timeout=POLL_TIMEOUT + 30, stop=stop))
    p.say(f"watching {root} (box {config.owner}/{config.box_name} on {config.server}); Ctrl-C to stop")
    try:
        code = Watcher(make_engine, poll_api, root, log, status_line, stop=stop).run()
    finally:
        poll_api.close()
        if log_out is not None:
            log_out.close()
    if code:
        raise typer.Exit(code)
    p.say("stopped")
