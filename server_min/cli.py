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


def _meta(data: Path) -> Any:
    """The metadata store of a data folder, alone (no block store: its temp files stay untouched)."""
    from server_min import wiring

    return wiring.open_meta(wiring.data_urls(_data_folder(data)).meta)


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
    data: Annotated[Path, typer.Option("--data", help="Folder for the database and blocks (created if absent).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    log_level: Annotated[str, typer.Option(help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")] = "warning",
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    trust_proxy: Annotated[list[str] | None, typer.Option(
        "--trust-proxy", help="Address of a reverse proxy whose X-Forwarded-For to believe (repeatable; "
        "default: none, every client is its own address).")] = None,
) -> None:
    """Run the Box server in the foreground until interrupted."""
    if log_level.lower() not in LOG_LEVELS:
        raise usage(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    if (tls_cert is None) != (tls_key is None):
        raise usage("give both --tls-cert and --tls-key, or neither")
    for pem in (tls_cert, tls_key):
        if pem is not None and not pem.is_file():
            raise usage(f"{pem} is not a file")
    folder = _data_folder(data)
    _check_port(host, port)
    from server_min import wiring
    from server_min.api import create_app
    from server_min.api.serve import run

    service = wiring.build_service(wiring.data_urls(folder))
    service.store.drop_unfinished()  # only a starting server: the uploads it finds cut off are its own
    scheme = "https" if tls_cert else "http"
    print(f"box server on {scheme}://{host}:{port} (data in {folder}); Ctrl-C to stop", file=sys.stderr, flush=True)
    run(create_app(service), host, port, log_level.lower(), tls_cert, tls_key, tuple(trust_proxy or ()))


@app.command()
def migrate(data: DataOpt) -> None:
    """Create or upgrade the server's database schema (the server also does it when it starts)."""
    from server_min.meta.sqlite import migrate as migrations

    meta = _meta(data)
    try:
        print(f"schema version {migrations.version(meta.conn)} (latest {migrations.latest()})")
    finally:
        meta.close()


@admin_app.command("add-user")
def add_user(name: Annotated[str, typer.Argument(help="The new user's name.")], data: DataOpt) -> None:
    """Create a user and print its first device token (alone on stdout)."""
    from server_min.notify.memory import MemoryNotifier
    from server_min.service.access import Rights
    from server_min.service.accounts import Accounts

    meta = _meta(data)
    try:
        token = Accounts(meta, Rights(meta), MemoryNotifier()).add_user(name)
    except ServerError as exc:
        raise usage(exc.message) from None
    finally:
        meta.close()
    sys.stdout.write(token + "\n")


@admin_app.command("passwd")
def passwd(name: Annotated[str, typer.Argument(help="The user whose password is set.")], data: DataOpt) -> None:
    """Set a user's password (asked twice on a terminal, else read from stdin); stored as an argon2 hash."""
    from server_min.service.passwords import Passwords

    password = _read_password(f"new password for {name}: ")
    meta = _meta(data)
    try:
        Passwords(meta).set_password(name, password)
    except ServerError as exc:
        raise usage(exc.message) from None
    finally:
        meta.close()
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


if __name__ == "__main__":
    main()
