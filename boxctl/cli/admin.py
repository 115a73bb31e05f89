"""`boxctl serve` and `boxctl admin add-user|passwd|check`: the server's commands, kept as aliases.

Each runs on the server's data folder and imports the server only when called, so that no other
command pays for loading it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from boxctl.cli.options import DataOpt
from boxctl.cli.prompt import read_password
from boxctl.errors import BoxError, IntegrityError, UsageError
from boxctl.output import Printer

admin_app = typer.Typer(no_args_is_help=True, help="Server administration (runs on the server's data folder).")


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
    Printer().warn(f"box server on {scheme}://{host}:{port} (data in {data.resolve()}); Ctrl-C to stop")
    run_server(data.resolve(), host, port, log_level, tls_cert, tls_key, tuple(trust_proxy or ()))


def _private_data(data: Path) -> None:
    """Make or check the server's data folder (0700, files 0600; refused if others may write it)."""
    from server_min.datadir import UnsafeDataDir, prepare

    try:
        prepare(data.resolve())
    except UnsafeDataDir as exc:
        raise BoxError(str(exc)) from None


def admin_passwd(
    name: Annotated[str, typer.Argument(help="The user whose password is set.")],
    data: DataOpt,
) -> None:
    """Set a user's password (asked twice on a terminal, else read from stdin); stored as an argon2 hash."""
    from server_min.datadir import prepare
    from server_min.errors import ServerError
    from server_min.passwords import Accounts
    from server_min.service import Service

    password = read_password(f"new password for {name}: ", confirm=True)
    try:
        prepare(data.resolve())  # 0700, files 0600; an unsafe folder is refused by the server anyway
        Accounts(Service(data.resolve()).sharing.store).set_password(name, password)
    except ServerError as exc:
        raise UsageError(exc.message) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    Printer().warn(f"password set for {name}")


def admin_check(
    data: DataOpt,
    read_data: Annotated[bool, typer.Option("--read-data", help="Also read, decompress and hash every block.")
                         ] = False,
    repair: Annotated[bool, typer.Option("--repair", help="Move damaged packs aside (to blocks/damaged/) and mark "
                                         "their lost blocks damaged, so a push heals them.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")] = False,
) -> None:
    """Check a server's data folder (safe while it runs); exit 0 when whole, 9 when damage was found."""
    from server_min.check import check

    try:
        report = check(data.resolve(), read_data=read_data, repair=repair)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    doc = report.as_json()
    if json_out:
        Printer().json(doc)
    else:
        _print_report(Printer(), doc, read_data)  # never quiet: the report is what it is run for
    if not report.whole:
        raise IntegrityError(f"the data folder {data} is damaged: {_summary(doc)}"
                             + ("" if repair else "; 'boxctl admin check --repair' moves the damage aside"))


def add_user(
    name: Annotated[str, typer.Argument(help="The new user's name.")],
    data: DataOpt,
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


admin_app.command("passwd")(admin_passwd)
admin_app.command("check")(admin_check)
admin_app.command("add-user")(add_user)


def _summary(doc: dict[str, Any]) -> str:
    parts = []
    if doc["database"] != ["ok"]:
        parts.append("the metadata database fails its integrity check")
    if doc["bad_entries"]:
        parts.append(f"{len(doc['bad_entries'])} journal entr(ies) fail their checksum")
    if doc["damaged_block_count"]:
        parts.append(f"{doc['damaged_block_count']} block(s) damaged, in {len(doc['lost'])} file version(s)")
    return ", ".join(parts)


def _print_report(p: Printer, doc: dict[str, Any], read_data: bool) -> None:
    say = p.say
    read = f", {doc['blocks_read']} read and hashed" if read_data else ""
    say(f"checked {doc['entries']} journal entries, {doc['blocks']} blocks{read}, {doc['packs']} packs")
    for message in doc["database"]:
        if message != "ok":
            say(f"database  {message}")
    for e in doc["bad_entries"]:
        say(f"entry     commit {e['seq']} {e['path']!r} of box {e['box_id']}: {e['reason']}")
    for b in doc["damaged_blocks"]:
        say(f"block     {b['sha256']}: {b['reason']}")
    for lost in doc["lost"]:
        say(f"lost      {lost['path']} (commit {lost['seq']}, box {lost['box_id']}): {len(lost['blocks'])} block(s)")
    if doc["orphan_packs"] or doc["orphan_bytes"]:
        say(f"orphans   {doc['orphan_packs']} pack(s), {doc['orphan_bytes']} byte(s) no block points to")
    if doc["repaired"]:
        r = doc["repaired"]
        say(f"repaired  {len(r['packs_moved'])} pack(s) moved to {r['moved_to']}, {r['blocks_salvaged']} good "
            f"block(s) kept, {r['blocks_marked_damaged']} marked damaged (a push from a device that has them "
            "heals them)")
    if doc["whole"]:
        say("the data folder is whole")
