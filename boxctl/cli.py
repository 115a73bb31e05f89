"""The `boxctl` command line: parses arguments, calls the engine, prints, and maps errors to exit codes."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from box_common.paths import InvalidPath, normalize_path
from box_common.schemas import BoxInfo
from box_common.units import format_size
from boxctl import __version__
from boxctl import check as checker
from boxctl.api import Api
from boxctl.cli_check import admin_check, damaged_error, print_damaged
from boxctl.cli_share import admin_passwd, check_can_push, link_app, password_login, share_app
from boxctl.config import (
    BOX_DIR,
    BoxConfig,
    Credentials,
    check_ca_cert,
    find_root,
    load_credentials,
    normalize_url,
    save_credentials,
    save_device,
)
from boxctl.engine import Engine
from boxctl.errors import BoxError, UsageError
from boxctl.index import Index, IndexDamaged
from boxctl.output import emit_json
from boxctl.terminal import console, printable
from boxctl.timeparse import parse_time
from boxctl.transport import Transport, parse_rate

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Box: keep a folder in sync, with every version.")
admin_app = typer.Typer(no_args_is_help=True, help="Server administration (runs on the server's data folder).")
app.add_typer(admin_app, name="admin")
devices_app = typer.Typer(help="List your devices, or revoke one.")
app.add_typer(devices_app, name="devices")
app.add_typer(share_app, name="share")
app.add_typer(link_app, name="link")
admin_app.command("passwd")(admin_passwd)
admin_app.command("check")(admin_check)

out = console()
err = console(stderr=True)


class State:
    """Options shared by every command."""

    quiet = False
    directory: Path | None = None
    bwlimit: float | None = None
    jobs: int | None = None  # None: the engine's defaults (see Engine)
    timeout = 60.0
    retries = 6
    delta = True


STATE = State()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
BwOpt = Annotated[str | None, typer.Option("--bwlimit", help="Limit bandwidth, rsync style: KiB/s, or 500K, 2M.")]
JobsOpt = Annotated[int | None, typer.Option(
    "--jobs", "-j", help="Batches of blocks in flight and hashing threads (default: 4 uploads in flight, "
    "other work one thread per core, 2 to 4).")]


def transfer_options(bwlimit: str | None, jobs: int | None) -> None:
    """Apply --bwlimit and --jobs for this run."""
    if bwlimit is not None:
        STATE.bwlimit = parse_rate(bwlimit)
    if jobs is not None:
        if not 1 <= jobs <= 64:
            raise UsageError("--jobs must be between 1 and 64")
        STATE.jobs = jobs


def make_api(server: str, token: str) -> Api:
    """An API client with this run's timeout, retry and bandwidth settings."""
    return Api(Transport(server, token, timeout=STATE.timeout, retries=STATE.retries, bwlimit=STATE.bwlimit))


def _show_version(value: bool) -> None:
    if value:
        out.print(f"boxctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
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
    STATE.quiet = quiet
    STATE.directory = directory
    if ca_cert is not None:
        os.environ["BOX_CA_CERT"] = str(check_ca_cert(ca_cert))  # every transport of this run trusts it
    STATE.timeout = timeout
    STATE.retries = retries


def say(message: str) -> None:
    if not STATE.quiet:
        out.print(message, markup=False)


def here() -> Path:
    return (STATE.directory or Path.cwd()).resolve()


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on a terminal; a no-op callback when piped, quiet or in --json mode."""
    if not enabled or STATE.quiet or not err.is_terminal:
        yield None
        return
    # Imported here: most runs (piped, cron, --json) never draw a bar, and the import costs startup time.
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)

        yield update


@contextmanager
def open_engine(json_mode: bool = False) -> Iterator[Engine]:
    """The engine of the synced folder around the current directory."""
    root = find_root(here())
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    api = make_api(config.server, creds.for_device(config.device_name))
    with progress_bar(not json_mode) as update:
        engine = Engine(root, config, api, progress=update, threads=STATE.jobs, delta=STATE.delta)
        try:
            yield engine
        finally:
            engine.close()
            api.close()


# --- server ---------------------------------------------------------------------------------


@app.command()
def serve(
    data: Annotated[Path, typer.Option("--data", help="Folder for the database and blocks (created if absent).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    trust_proxy: Annotated[list[str] | None, typer.Option(
        "--trust-proxy", help="Address of a reverse proxy whose X-Forwarded-For to believe (repeatable; "
        "default: none, every client is its own address).")] = None,
) -> None:
    """Run the Box server in the foreground until interrupted."""
    from server_min.app import serve as run_server

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    for pem in (tls_cert, tls_key):
        if pem is not None and not pem.is_file():
            raise UsageError(f"{pem} is not a file")
    _private_data(data)
    scheme = "https" if tls_cert else "http"
    err.print(f"box server on {scheme}://{host}:{port} (data in {data.resolve()}); Ctrl-C to stop", markup=False)
    run_server(data.resolve(), host, port, log_level, tls_cert, tls_key, tuple(trust_proxy or ()))


def _private_data(data: Path) -> None:
    """Make or check the server's data folder (0700, files 0600; refused if others may write it)."""
    from server_min.datadir import UnsafeDataDir, prepare

    try:
        prepare(data.resolve())
    except UnsafeDataDir as exc:
        raise BoxError(str(exc)) from None


@admin_app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    data: Annotated[Path, typer.Option("--data", help="The server's data folder.")],
) -> None:
    """Create a user and print its first device token (alone on stdout)."""
    from server_min.errors import ServerError
    from server_min.service import Service

    _private_data(data)
    try:
        token = Service(data.resolve()).add_user(name)
    except ServerError as exc:
        raise UsageError(exc.message) from None
    sys.stdout.write(token + "\n")


# --- account and set-up ---------------------------------------------------------------------


@app.command()
def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8765")],
    user: Annotated[str, typer.Option("--user", help="Your user name.")],
    token: Annotated[str | None, typer.Option("--token", help="A device token from 'boxctl admin add-user'.")] = None,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert", help="Trust this private CA (PEM) for the server, "
                                                 "now and in later commands.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Check and store credentials for a server (in your config folder, mode 0600)."""
    STATE.quiet = STATE.quiet or quiet
    server = normalize_url(url)
    ca = check_ca_cert(ca_cert) if ca_cert is not None else None
    if ca is not None:
        os.environ["BOX_CA_CERT"] = str(ca)
    elif os.environ.get("BOX_CA_CERT"):
        ca = Path(os.environ["BOX_CA_CERT"])
    token = token or os.environ.get("BOX_TOKEN") or password_login(server, user)  # no token: ask the password
    me = Api(Transport(server, token, retries=2)).me()
    path = save_credentials(Credentials(server, user, token), ca_cert=ca)
    if me["user"] != user:
        raise UsageError(f"that token belongs to user {me['user']!r}, not {user!r}")
    say(f"logged in to {server} as {me['user']} (credentials in {path})")


def _register(api: Api, creds: Credentials, device: str | None) -> tuple[int, str, Api]:
    """This machine's device for the server (registered once, then reused), and an API client using its token."""
    name = device or socket.gethostname() or "device"
    known = creds.devices.get(name)
    if known is None or os.environ.get("BOX_TOKEN"):
        answer = api.register_device(name)
        if os.environ.get("BOX_TOKEN"):
            return int(answer["id"]), str(answer["name"]), api
        save_device(creds, name, int(answer["id"]), str(answer["token"]))
        known = creds.devices[name]
    device_api = make_api(creds.server, str(known["token"]))
    api.close()
    return int(known["id"]), name, device_api


def _selection(paths: list[str]) -> list[str]:
    """Box paths for --only, checked like any path."""
    try:
        return sorted({normalize_path(p.strip("/")) for p in paths})
    except InvalidPath as exc:
        raise UsageError(f"--only: {exc}") from None


def _make_folder(root: Path, box: BoxInfo, server: str, device_id: int, device_name: str,
                 only: list[str] | None = None) -> BoxConfig:
    (root / BOX_DIR).mkdir(parents=True, exist_ok=True)
    chunking = box["chunking"]
    config = BoxConfig(server=server, box_id=int(box["id"]), box_name=box["name"], owner=box["owner"],
                       device_id=device_id, device_name=device_name, min_size=chunking["min"],
                       avg_size=chunking["avg"], max_size=chunking["max"], prefix=box.get("prefix", ""),
                       only=only or [])
    config.save(root)
    Index(root / BOX_DIR / "index.db").close()
    return config


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="The folder to sync (created if absent).")] = Path("."),
    server: Annotated[str | None, typer.Option("--server", help="Server URL (or BOX_SERVER).")] = None,
    box: Annotated[str, typer.Option("--box", help="Box name: created if new, linked if yours.")] = "",
    device: Annotated[str | None, typer.Option("--device", help="This device's name (default: host name).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make a folder a synced folder of a box (creating the box on the server if needed)."""
    STATE.quiet = STATE.quiet or quiet
    if not box:
        raise UsageError("give the box name with --box NAME")
    root = (here() / directory).resolve() if not directory.is_absolute() else directory
    if (root / BOX_DIR / "config").exists():
        raise UsageError(f"{root} is already a synced folder")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    creds = load_credentials(server)
    api = Api(Transport(creds.server, creds.token))
    info = api.find_box(box) if "/" in box else api.create_box(box)
    if info["role"] not in ("owner", "editor"):
        raise UsageError(f"you can only read box {box!r}; use 'boxctl clone' to get a copy")
    device_id, device_name, api = _register(api, creds, device)
    root.mkdir(parents=True, exist_ok=True)
    _make_folder(root, info, creds.server, device_id, device_name)
    if json_out:
        emit_json({"root": str(root), "box": info, "device": {"id": device_id, "name": device_name}})
    else:
        say(f"{root} now syncs box {info['owner']}/{info['name']} on {creds.server} as device {device_name!r}")
        say("next: 'boxctl push' to upload what is here, 'boxctl pull' to fetch what the box holds")


@app.command()
def clone(
    url: Annotated[str, typer.Argument(help="Server URL.")],
    name: Annotated[str, typer.Argument(help="Box name (yours) or OWNER/BOX.")],
    directory: Annotated[Path | None, typer.Argument(help="New folder (default: the box name).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="This device's name (default: host name).")] = None,
    only: Annotated[list[str] | None,
                    typer.Option("--only", help="Keep only these folders or files: --only PATH [PATH...].")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Make a new synced folder holding the box's current files (or only some of them, with --only)."""
    transfer_options(bwlimit, jobs)
    STATE.quiet = STATE.quiet or quiet
    creds = load_credentials(url)
    root = (here() / (directory or Path(name.rsplit("/", 1)[-1]))).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} already exists and is not an empty folder")
    api = Api(Transport(creds.server, creds.token))
    info = api.find_box(name)
    device_id, device_name, api = _register(api, creds, device)
    root.mkdir(parents=True, exist_ok=True)
    config = _make_folder(root, info, creds.server, device_id, device_name, _selection(only or []))
    with progress_bar(not json_out) as update:
        engine = Engine(root, config, api, progress=update, threads=STATE.jobs)
        try:
            result = engine.pull()
        finally:
            engine.close()
    if json_out:
        emit_json({"root": str(root), "box": info, "pull": result.as_json()})
    else:
        say(f"cloned {info['owner']}/{info['name']} into {root}: {len(result.written)} path(s)")
    if result.damaged:
        print_damaged(result.damaged)
        raise damaged_error(result.damaged)


# --- everyday commands ----------------------------------------------------------------------


@app.command()
def status(json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show local changes since the last sync and how many remote changes wait."""
    STATE.quiet = STATE.quiet or quiet
    with open_engine(json_out) as engine:
        result = engine.status()
    if json_out:
        emit_json(result.as_json())
        return
    for label, paths in (("added", result.added), ("modified", result.modified), ("deleted", result.deleted)):
        for path in paths:
            say(f"{label:9} {path}")
    for path, reason in result.skipped:
        err.print(f"not synced: {path}: {reason}", markup=False)
    if result.ignored:
        origin = "synced with the box" if result.ignore_synced else "of this folder"
        say(f".boxignore ({origin}) leaves out {len(result.ignored)} path(s); its rules: "
            + ", ".join(result.ignore_rules[:10]) + (" ..." if len(result.ignore_rules) > 10 else ""))
        for path in result.ignored[:20]:
            say(f"ignored   {path}")
        if len(result.ignored) > 20:
            say(f"          ... and {len(result.ignored) - 20} more ('boxctl status --json' lists them all)")
    if result.clean:
        say("no local changes")
    say(f"{result.remote_waiting} remote change(s) waiting" + (": run 'boxctl pull'" if result.remote_waiting else ""))


@app.command()
def push(
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
    transfer_options(bwlimit, jobs)
    STATE.delta = not no_delta
    STATE.quiet = STATE.quiet or quiet
    with open_engine(json_out) as engine:
        check_can_push(engine.api, engine.config)  # a viewer is refused before any upload
        started = time.monotonic()
        repaired = engine.repair_blocks() if repair_blocks and not dry_run else None
        result = engine.push(message, dry_run=dry_run)
        elapsed = time.monotonic() - started
    if json_out:
        emit_json(result.as_json() | {"seconds": round(elapsed, 3)}
                  | ({"repair": repaired.as_json()} if repaired else {}))
        return
    if repaired is not None:
        say(f"repair: {repaired.blocks_missing} of {repaired.blocks_checked} block(s) missing on the server, "
            f"{repaired.blocks_sent} sent again" + (f"; not found here any more in {len(repaired.unavailable)} "
                                                   "file(s)" if repaired.unavailable else ""))
    for path, reason in result.skipped:
        err.print(f"not pushed: {path}: {reason}", markup=False)
    if not result.changes:
        ignored = len(result.ignored)
        say("nothing to push" + (f" ({ignored} path(s) left out by .boxignore: see 'boxctl status')"
                                 if ignored else ""))
        return
    verb = "would push" if dry_run else "pushed"
    for c in result.changes:
        say(f"{c.status:9} {c.path}")
    tail = "" if dry_run else (f" as commit {result.seq}: {result.blocks_sent} new block(s), "
                               f"{_size(result.bytes_sent)} sent in {elapsed:.1f}s")
    say(f"{verb} {len(result.changes)} change(s){tail}")


@app.command()
def pull(
    paths: Annotated[list[str] | None,
                     typer.Argument(help="Fetch only these files or folders (sync on demand).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Apply remote changes; a file changed on both sides keeps both versions."""
    transfer_options(bwlimit, jobs)
    STATE.quiet = STATE.quiet or quiet
    with open_engine(json_out) as engine:
        result = engine.pull(paths or None, here())
    _print_pull(result, json_out)
    if result.damaged:
        raise damaged_error(result.damaged)


def _print_pull(result: Any, json_out: bool) -> None:
    if json_out:
        emit_json(result.as_json())
        return
    for path in result.written:
        say(f"updated   {path}")
    for path in result.deleted:
        say(f"deleted   {path}")
    for c in result.conflicts:
        say(f"conflict  {c['path']}: your version kept as {c['copy']!r}")
    for path in result.kept:
        say(f"kept      {path} (changed here; it will be pushed)")
    for path, reason in result.refused:
        err.print(f"refused   {path}: {reason}", markup=False)
    print_damaged(result.damaged)
    if not (result.written or result.deleted or result.conflicts or result.kept or result.damaged):
        say("already up to date")
    if result.conflicts:
        say("conflicted copies are new files: run 'boxctl push' to sync them")


@app.command()
def sync(
    message: Annotated[str, typer.Option("-m", "--message", help="Commit message.")] = "",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Pull, then push: one command for cron and CI."""
    transfer_options(bwlimit, jobs)
    STATE.quiet = STATE.quiet or quiet
    with open_engine(json_out) as engine:
        pulled = engine.pull()
        pushed = engine.push(message)
    if json_out:
        emit_json({"pull": pulled.as_json(), "push": pushed.as_json()})
    else:
        _print_pull(pulled, False)
        say(f"pushed {len(pushed.changes)} change(s) as commit {pushed.seq}" if pushed.changes else "nothing to push")
    if pulled.damaged:
        raise damaged_error(pulled.damaged)


@app.command()
def log(
    path: Annotated[str | None, typer.Argument(help="Show the revisions of this file or folder.")] = None,
    limit: Annotated[int, typer.Option("-n", help="How many entries.")] = 20,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show commits (who, device, when, message, paths) or the revisions of one path."""
    STATE.quiet = STATE.quiet or quiet
    if limit < 1:
        raise UsageError("-n must be at least 1")
    with open_engine(json_out) as engine:
        data = engine.log(path, limit, here())
    if json_out:
        emit_json(data)
        return
    if "revisions" in data:
        if not data["revisions"]:
            say(f"no history for {path}")
        for r in data["revisions"]:
            what = "deleted" if r["op"] == "delete" else f"{_size(r['size'])}" if r["kind"] == "file" else r["kind"]
            say(f"rev {r['rev']:<6} {_when(r['time'])}  {r['user']}@{r['device'] or '-'}  {r['path']}  {what}")
        return
    for c in data["commits"]:
        say(f"commit {c['seq']}  {_when(c['time'])}  {c['user']}@{c['device'] or '-'}  {c['message']}")
        for p in c["paths"][:20]:
            say(f"    {'-' if p['op'] == 'delete' else '+'} {p['path']}")
        if c["changes"] > 20:
            say(f"    ... and {c['changes'] - 20} more")


@app.command()
def restore(
    path: Annotated[str, typer.Argument(help="File or folder to restore ('.' for the whole box).")],
    rev: Annotated[int | None, typer.Option("--rev", help="Commit number (see 'boxctl log').")] = None,
    at: Annotated[str | None, typer.Option("--at", help="A time: '2026-11-25 10:15', '@EPOCH' or '2h'.")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="Write it here instead of changing the box.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Bring a file, deleted file, folder or the whole box back to an earlier version."""
    transfer_options(bwlimit, jobs)
    STATE.quiet = STATE.quiet or quiet
    if (rev is None) == (at is None):
        raise UsageError("give exactly one of --rev REV or --at TIME")
    when = parse_time(at) if at is not None else None
    with open_engine(json_out) as engine:
        result = engine.restore(path, rev, when, (here() / to).resolve() if to else None, here())
    damaged = result.get("pull", {}).get("damaged")
    if json_out:
        emit_json(result)
        if damaged:
            raise damaged_error(damaged)
        return
    if damaged:
        raise damaged_error(damaged)
    if to is not None:
        for refused in result["refused"]:
            err.print(f"refused   {refused['path']}: {refused['reason']}", markup=False)
        say(f"wrote {result['restored']} as of commit {result['seq']} to {result['to']} ({result['files']} file(s))")
    elif result["seq"] is None:
        say(f"{result['restored']} is already as it was at commit {result['from_seq']}")
    else:
        say(f"restored {result['restored']} to commit {result['from_seq']} as new commit {result['seq']} "
            f"({result['changes']} change(s))")


@app.command()
def ls(
    path: Annotated[str, typer.Argument(help="Folder or file in the box.")] = "",
    remote: Annotated[bool, typer.Option("--remote", help="List what the server holds (the default).")] = True,
    at: Annotated[int | None, typer.Option("--rev", help="As of this commit.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List what the box holds on the server, without downloading it."""
    STATE.quiet = STATE.quiet or quiet
    with open_engine(json_out) as engine:
        prefix = engine.box_path(path, here()) if path else ""
        data = engine.tree(prefix, at)
    if json_out:
        emit_json(data)
        return
    for e in data["entries"]:
        size = _size(e["size"]) if e["kind"] == "file" else e["kind"]
        say(f"{size:>10}  rev {e['seq']:<6} {e['path']}" + ("/" if e["kind"] == "dir" else ""))


@app.command()
def check(
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
    transfer_options(None, jobs)
    STATE.quiet = STATE.quiet or quiet
    if repair:
        _repair(read_data, json_out)
        return
    try:
        with open_engine(json_out) as engine:
            report = checker.check(engine, read_data)
    except IndexDamaged as exc:
        if not json_out:
            raise
        report = checker.CheckReport(index_damaged=exc.message)
    if json_out:
        emit_json(report.as_json())
    else:
        _print_check(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _print_check(report: checker.CheckReport) -> None:
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
        err.print(f"not checked: {path}: {reason}", markup=False)
    if report.behind:
        say(f"behind    {len(report.behind)} path(s) changed on the server since the last pull "
            f"(cursor {report.cursor}, head {report.head}): run 'boxctl pull'")
    read = f"; {report.files_read} file(s) reread, {_size(report.bytes_read)}" if report.read_data else ""
    if report.damaged:
        say(f"damage found{read}: run 'boxctl check --repair{' --read-data' if report.rot else ''}'")
    elif report.differs:
        say(f"differences found{read}: 'boxctl sync' settles them")
    else:
        say(f"clean: the folder, its index and the server's head (commit {report.head}) agree{read}")


def _repair(read_data: bool, json_out: bool) -> None:
    root = find_root(here())
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    api = make_api(config.server, creds.for_device(config.device_name))
    try:
        with progress_bar(not json_out) as update:
            result = checker.repair(root, config, api, update, STATE.jobs, read_data)
    finally:
        api.close()
    if json_out:
        emit_json(result.as_json())
    else:
        if result.rebuilt:
            kept = f"; the damaged one is kept as {result.moved_to}" if result.moved_to else ""
            say(f"rebuilt the index ({result.reason}){kept}")
            say(f"{result.recorded} file(s) match the server's head (commit {result.cursor}): recorded as synced")
        for path in result.mended:
            say(f"mended    {path}")
        pulled = result.pulled
        if pulled and (pulled.written or pulled.deleted or pulled.conflicts or pulled.kept or pulled.refused):
            _print_pull(pulled, False)
        for r in result.rot:
            if r.moved_to:
                say(f"restored  {r.path} from the server; the damaged bytes are kept as {r.moved_to!r}")
            else:
                err.print(f"not restored: {r.path}: {r.error}", markup=False)
        if not (result.rebuilt or result.mended or result.rot):
            say("nothing to repair" + ("" if read_data else " (add --read-data to reread every file)"))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def watch(
    directory: Annotated[Path, typer.Argument(help="The synced folder (default: the current one).")] = Path("."),
    log_file: Annotated[Path | None, typer.Option("--log-file", help="Append one line per synced change.")] = None,
    quiet: QuietOpt = False,
    bwlimit: BwOpt = None,
    jobs: JobsOpt = None,
) -> None:
    """Keep the folder in sync both ways, live, until Ctrl-C or SIGTERM."""
    transfer_options(bwlimit, jobs)
    from boxctl.watch import Watcher

    STATE.quiet = STATE.quiet or quiet
    root = find_root(here() / directory)
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    token = creds.for_device(config.device_name)
    log_out = open(log_file, "a", buffering=1, encoding="utf-8") if log_file else None  # noqa: SIM115

    def log(line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if log_out is not None:
            log_out.write(f"{stamp} {printable(line)}\n")
        say(f"{stamp} {line}")

    def status_line(line: str) -> None:
        if log_out is not None:
            log_out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {printable(line)}\n")
        if not STATE.quiet:
            err.print(line, markup=False)

    stop = threading.Event()

    def make_engine() -> Engine:
        # Few quick retries: watch's own backoff takes over, and a stop ends any wait at once.
        transport = Transport(config.server, token, timeout=STATE.timeout, retries=min(STATE.retries, 2),
                              bwlimit=STATE.bwlimit, max_backoff=2.0, stop=stop)
        return Engine(root, config, Api(transport), threads=STATE.jobs)

    poll_api = Api(Transport(config.server, token, retries=0, timeout=POLL_TIMEOUT + 30, stop=stop))
    say(f"watching {root} (box {config.owner}/{config.box_name} on {config.server}); Ctrl-C to stop")
    try:
        code = Watcher(make_engine, poll_api, root, log, status_line, stop=stop).run()
    finally:
        poll_api.close()
        if log_out is not None:
            log_out.close()
    if code:
        raise typer.Exit(code)
    say("stopped")


POLL_TIMEOUT = 30.0


@contextmanager
def account_api(server: str | None) -> Iterator[Api]:
    """An API client for `server`: the synced folder's device token inside one, else the login token."""
    try:
        root = find_root(here())
        config = BoxConfig.load(root)
        creds = load_credentials(server or config.server)
        token = creds.for_device(config.device_name) if creds.server == config.server else creds.token
    except BoxError:
        creds = load_credentials(server)
        token = creds.token
    api = Api(Transport(creds.server, token))
    try:
        yield api
    finally:
        api.close()


ServerOpt = Annotated[str | None, typer.Option("--server", help="Server URL (default: this folder's, or BOX_SERVER).")]


@devices_app.callback(invoke_without_command=True)
def devices(ctx: typer.Context, server: ServerOpt = None, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List your devices: name, kind, last seen, and how many changes each is behind."""
    STATE.quiet = STATE.quiet or quiet
    if ctx.invoked_subcommand is not None:
        return
    with account_api(server) as api:
        listed = api.devices()
    if json_out:
        emit_json({"devices": listed})
        return
    say(f"{'id':>4}  {'name':20} {'kind':8} {'last seen':19}  behind")
    for d in listed:
        seen = _when(d["last_seen"]) if d["last_seen"] else "never"
        state = " (revoked)" if d["revoked"] else " (this device)" if d["current"] else ""
        say(f"{d['id']:>4}  {d['name']:20} {d['kind']:8} {seen:19}  {d['behind']}{state}")


@devices_app.command("revoke")
def devices_revoke(
    name: Annotated[str, typer.Argument(help="Device name or id (see 'boxctl devices').")],
    server: ServerOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Revoke one device's token at once: its next request is refused."""
    STATE.quiet = STATE.quiet or quiet
    with account_api(server) as api:
        answer = api.revoke_device(name)
    if json_out:
        emit_json(answer)
    else:
        say(f"revoked device {answer['name']} (id {answer['id']})")


def _size(n: int) -> str:
    return format_size(n)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


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
    try:
        app(args=expand_multi_options(sys.argv[1:]))
    except BoxError as exc:
        err.print(f"error: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"error: {exc.strerror or exc}{where}", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
