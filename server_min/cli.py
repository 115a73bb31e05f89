"""`box-server`: run the server, upgrade its database, administer it. `boxctl serve` and `boxctl admin`
are aliases of the same commands.

Each command opens only the stores it needs: `serve` alone clears what interrupted uploads left, so an
admin command run beside a live server never touches the uploads in flight.
"""

from __future__ import annotations

import errno
import getpass
import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from server_min.datadir import UnsafeDataDir, prepare
from server_min.errors import ServerError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# What `pip install 'boxctl[server]'` adds to a client-only install.
SERVER_EXTRA = ("fastapi", "starlette", "uvicorn", "argon2", "httptools", "pydantic")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The Box server: serve a data folder, and administer it.")
admin_app = typer.Typer(no_args_is_help=True, help="Server administration (runs on the server's data folder).")
app.add_typer(admin_app, name="admin")

DataOpt = Annotated[Path, typer.Option("--data", help="The server's data folder.")]


class CliError(Exception):
    """A one-line message for the operator and the exit code that goes with it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def usage(message: str) -> CliError:
    return CliError(message, 2)


def _data_folder(data: Path) -> Path:
    """Make or check the data folder (0700, files 0600; refused if it is a file or others may write it)."""
    data = data.resolve()
    if data.exists() and not data.is_dir():
        raise CliError(f"data folder {data} is a file, not a folder")
    try:
        return prepare(data)
    except UnsafeDataDir as exc:
        raise CliError(str(exc)) from None


class Stores:
    """Where a command finds the server's stores: `--data DIR` (the embedded default: meta.db and blocks/
    inside it), or `--meta URL` and `--blocks URL` for shared engines (docs/scaling.md); a URL given
    beside `--data` replaces that part of the folder."""

    def __init__(self, data: Path | None, meta: str | None, blocks: str | None = None, notify: str | None = None,
                 s3_endpoint: str | None = None, cache: str | None = None) -> None:
        self.data = data
        self.meta = meta
        self.blocks = blocks
        self.notify = notify
        self.s3_endpoint = s3_endpoint
        self.cache = cache

    def folder(self) -> Path | None:
        """The data folder, made or checked (0700, files 0600), when one is given."""
        return _data_folder(self.data) if self.data is not None else None

    def urls(self, need_blocks: bool = True) -> Any:
        """The StoreUrls of these options; a usage error naming what is missing."""
        from server_min import wiring

        folder = self.folder()
        if folder is None and (self.meta is None or (need_blocks and self.blocks is None)):
            raise usage("say where the server's data is: --data DIR, or --meta URL"
                        + (" and --blocks URL" if need_blocks else "") + " (or BOX_META, BOX_BLOCKS)")
        base = wiring.data_urls(folder) if folder is not None else None
        try:
            return wiring.store_urls(
                meta=self.meta or (base.meta if base else ""), blocks=self.blocks or (base.blocks if base else ""),
                notify=self.notify, s3_endpoint=self.s3_endpoint, cache=self.cache, folder=folder)
        except wiring.BadStoreUrl as exc:
            raise usage(str(exc)) from None

    def upgrades(self, urls: Any) -> bool:
        """Whether opening the metadata may create or upgrade its schema: the embedded default (a data
        folder's meta.db) does, as it always has; a store named by --meta is created and upgraded only by
        `box-server migrate`, which every process sharing it then waits for."""
        from server_min import wiring

        return self.meta is None or wiring.is_new_embedded(urls.meta)

    def open_meta(self) -> Any:
        """The metadata store alone (no block store: a live server's temp files stay untouched)."""
        from server_min import wiring

        urls = self.urls(need_blocks=False)
        try:
            return wiring.open_meta(urls.meta, upgrade=self.upgrades(urls))
        except (wiring.StoreUnavailable, wiring.BadStoreUrl) as exc:
            raise CliError(str(exc)) from None


DataOptional = Annotated[Path | None, typer.Option(
    "--data", envvar="BOX_DATA", help="The server's data folder (the embedded default: SQLite and a block folder).")]
MetaOpt = Annotated[str | None, typer.Option(
    "--meta", envvar="BOX_META", help="Metadata store URL: sqlite:///PATH or postgresql://USER@HOST/DB.")]
BlocksOpt = Annotated[str | None, typer.Option(
    "--blocks", envvar="BOX_BLOCKS", help="Block store URL: file:///PATH or s3://BUCKET/PREFIX.")]
NotifyOpt = Annotated[str | None, typer.Option(
    "--notify", envvar="BOX_NOTIFY", help="How server processes wake each other's long polls: memory (one "
    "process, the default), postgresql (the --meta database) or redis://HOST:PORT.")]
S3EndpointOpt = Annotated[str | None, typer.Option(
    "--s3-endpoint", envvar="BOX_S3_ENDPOINT", help="The S3 store's URL (default: AWS, or AWS_ENDPOINT_URL); "
    "credentials are read the way boto3 reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles).")]
CacheOpt = Annotated[str | None, typer.Option(
    "--block-cache", envvar="BOX_BLOCK_CACHE", help="Size of the local disk cache of recently read blocks "
    "in front of an S3 store, e.g. 2G (default 1G; 0 for none).")]


def _check_port(host: str, port: int) -> None:
    """One line, exit 1, when the address is taken (uvicorn would print a traceback-like log)."""
    if not 0 < port < 65536:
        raise usage(f"--port must be between 1 and 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CliError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is in use: stop what listens there, or pick "
                               "another --port") from None
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@app.command()
def serve(
    data: DataOptional = None,
    meta: MetaOpt = None,
    blocks: BlocksOpt = None,
    notify: NotifyOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    block_cache: CacheOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    log_level: Annotated[str, typer.Option(help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")] = "warning",
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    trust_proxy: Annotated[list[str] | None, typer.Option(
        "--trust-proxy", help="Address of a reverse proxy whose X-Forwarded-For to believe (repeatable; "
        "default: none, every client is its own address).")] = None,
) -> None:
    """Run the Box server in the foreground until interrupted: on a data folder (--data DIR), or as one of
    several processes on shared stores (--meta postgresql://... --blocks s3://... --notify postgresql)."""
    if log_level.lower() not in LOG_LEVELS:
        raise usage(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    if (tls_cert is None) != (tls_key is None):
        raise usage("give both --tls-cert and --tls-key, or neither")
    for pem in (tls_cert, tls_key):
        if pem is not None and not pem.is_file():
            raise usage(f"{pem} is not a file")
    stores = Stores(data, meta, blocks, notify, s3_endpoint, block_cache)
    urls = stores.urls()
    _check_port(host, port)
    from server_min import wiring
    from server_min.api import create_app
    from server_min.api.serve import run

    try:
        service = wiring.build_service(urls, upgrade=stores.upgrades(urls))
    except (wiring.StoreUnavailable, wiring.BadStoreUrl) as exc:
        raise CliError(str(exc)) from None
    service.store.drop_unfinished()  # only a starting server: the uploads it finds cut off are its own
    scheme = "https" if tls_cert else "http"
    where = f"data in {urls.folder}" if urls.folder else f"metadata {wiring.redact(urls.meta)}, blocks {urls.blocks}"
    print(f"box server on {scheme}://{host}:{port} ({where}); Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        run(create_app(service), host, port, log_level.lower(), tls_cert, tls_key, tuple(trust_proxy or ()))
    finally:
        service.close()  # the bus's listener and the stores' connections


@app.command()
def migrate(
    data: DataOptional = None,
    meta: MetaOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")] = False,
) -> None:
    """Create or upgrade the metadata schema (a server refuses to start on an older one). Safe to run
    while servers run: the steps are taken under the database's own lock, each once."""
    from server_min import wiring

    urls = Stores(data, meta).urls(need_blocks=False)
    try:
        before, applied, latest = wiring.migrate_meta(urls.meta)
    except (wiring.StoreUnavailable, wiring.BadStoreUrl) as exc:
        raise CliError(str(exc)) from None
    if json_out:
        print(json.dumps({"from": before, "applied": applied, "version": latest}))
    elif applied:
        print(f"schema upgraded from version {before} to {latest}: {', '.join(applied)}")
    else:
        print(f"schema version {latest}: up to date")


@admin_app.command("add-user")
def add_user(name: Annotated[str, typer.Argument(help="The new user's name.")], data: DataOptional = None,
             meta: MetaOpt = None) -> None:
    """Create a user and print its first device token (alone on stdout)."""
    from server_min.notify.memory import MemoryNotifier
    from server_min.service.access import Rights
    from server_min.service.accounts import Accounts

    store = Stores(data, meta).open_meta()
    try:
        token = Accounts(store, Rights(store), MemoryNotifier()).add_user(name)
    except ServerError as exc:
        raise usage(exc.message) from None
    finally:
        store.close()
    sys.stdout.write(token + "\n")


@admin_app.command("passwd")
def passwd(name: Annotated[str, typer.Argument(help="The user whose password is set.")], data: DataOptional = None,
           meta: MetaOpt = None) -> None:
    """Set a user's password (asked twice on a terminal, else read from stdin); stored as an argon2 hash."""
    from server_min.service.passwords import Passwords

    password = _read_password(f"new password for {name}: ")
    store = Stores(data, meta).open_meta()
    try:
        Passwords(store).set_password(name, password)
    except ServerError as exc:
        raise usage(exc.message) from None
    finally:
        store.close()
    print(f"password set for {name}", file=sys.stderr)


def _read_password(prompt: str) -> str:
    """A password from the terminal (asked twice), or one line of stdin when not a tty."""
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("again: ") != first:
            raise usage("the two passwords differ; nothing was changed")
        password = first
    else:
        password = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
    if not password:
        raise usage("no password given: type it, or pipe it on stdin")
    return password


@app.command("check")
@admin_app.command("check")
def check(
    data: DataOpt,
    read_data: Annotated[bool, typer.Option("--read-data", help="Also read, decompress and hash every block.")
                         ] = False,
    repair: Annotated[bool, typer.Option("--repair", help="Move damaged packs aside (to blocks/damaged/) and mark "
                                         "their lost blocks damaged, so a push heals them; move journal entries "
                                         "whose checksum fails to damaged_entries, so pulls go on; rebuild "
                                         "damaged indexes of meta.db.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")] = False,
) -> None:
    """Check a server's data folder (safe while it runs); exit 0 when whole, 9 when damage was found."""
    from server_min.check import check as run_check
    from server_min.check_report import print_report, summary

    try:
        report = run_check(data.resolve(), read_data=read_data, repair=repair)
    except FileNotFoundError as exc:
        raise usage(str(exc)) from None
    doc = report.as_json()
    if json_out:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print_report(doc, read_data)
    if not report.whole:
        raise CliError(f"the data folder {data} is damaged: {summary(doc)}"
                       + ("" if repair else "; 'box-server check --repair' moves the damage aside"), 9)


def main(args: list[str] | None = None, prog: str = "box-server") -> None:
    """Entry point: run a command, turning every CliError into one line on stderr and its exit code."""
    try:
        app(args=sys.argv[1:] if args is None else args, prog_name=prog)
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_EXTRA:
            raise
        print(f"error: the server's own dependencies are not installed ({exc.name} is missing): "
              "pip install 'boxctl[server]'", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
