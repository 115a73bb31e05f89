"""`boxctl share`, `boxctl link`, `boxctl admin passwd` and password login: parse, call the server, print.

Kept apart from cli.py (one `add_typer` each there). This module never imports cli.py, which may be
running as __main__: options given before the subcommand (-C, -q) are read from the click context.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import click
import typer
from typer.core import TyperGroup

from box_common.paths import InvalidPath, normalize_prefix
from boxctl.api import Api
from boxctl.config import BoxConfig, find_root, load_credentials, normalize_url
from boxctl.errors import AuthError, BoxError, ServerRefused, UsageError
from boxctl.output import emit_json
from boxctl.terminal import console
from boxctl.timeparse import UNITS
from boxctl.transport import Transport

out = console()
err = console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


# --- context: the synced folder around the current directory ------------------------------------


def _root_params() -> dict[str, Any]:
    ctx = click.get_current_context(silent=True)
    return dict(ctx.find_root().params) if ctx is not None else {}


def _here() -> Path:
    directory = _root_params().get("directory")
    return (Path(directory) if directory else Path.cwd()).resolve()


def _quiet(local: bool) -> bool:
    return local or bool(_root_params().get("quiet"))


def _say(message: str, quiet: bool) -> None:
    if not _quiet(quiet):
        out.print(message, markup=False)


@dataclass
class Folder:
    """The synced folder a share or link command runs in."""

    root: Path
    config: BoxConfig
    api: Api

    @property
    def box_id(self) -> int:
        return self.config.box_id

    @property
    def label(self) -> str:
        return f"{self.config.owner}/{self.config.box_name}"

    def box_path(self, path: str) -> str:
        """A user-given path (relative to the current folder) as a path of this folder's view of the box."""
        given = Path(path)
        full = given if given.is_absolute() else _here() / given
        rel = os.path.relpath(os.path.abspath(full), self.root)
        if rel.startswith(".."):
            raise UsageError(f"{path} is not inside the synced folder {self.root}")
        try:
            return normalize_prefix("" if rel == "." else rel.replace(os.sep, "/"))
        except InvalidPath as exc:
            raise UsageError(str(exc)) from None


@contextmanager
def open_folder() -> Iterator[Folder]:
    root = find_root(_here())
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    api = Api(Transport(config.server, creds.for_device(config.device_name)))
    try:
        yield Folder(root, config, api)
    finally:
        api.close()


def check_can_push(api: Api, config: BoxConfig) -> None:
    """Refuse a push from a viewer before anything is uploaded (the server refuses the commit anyway)."""
    info = api.box(config.box_id)
    if info.get("role") not in ("owner", "editor"):
        where = f" (folder {info['prefix']!r})" if info.get("prefix") else ""
        raise AuthError(f"you have {info.get('role')} access to {config.owner}/{config.box_name}{where}: "
                        "you can pull, but pushing needs editor access; nothing was sent")


# --- share ------------------------------------------------------------------------------------

share_app = typer.Typer(no_args_is_help=True, help="Share this box, or one folder of it, with other users.")


@share_app.command("add")
def share_add(
    user: Annotated[str, typer.Argument(help="The user to share with.")],
    path: Annotated[str | None, typer.Argument(help="A folder to share (default: the whole box).")] = None,
    role: Annotated[str, typer.Option("--role", help="viewer (read only) or editor (may push).")] = "viewer",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Give USER viewer or editor access to the whole box, or to one folder (which becomes their root)."""
    if role not in ("viewer", "editor"):
        raise UsageError("--role must be viewer or editor")
    with open_folder() as folder:
        rel = folder.box_path(path) if path else ""
        answer = folder.api.share(folder.box_id, user, rel, role)
    if json_out:
        emit_json(answer)
        return
    what = f"folder {answer['path']!r} of {folder.label}" if answer["path"] else f"box {folder.label}"
    verb = "shared" if answer.get("created") else "changed the share of"
    _say(f"{verb} {what} with {answer['user']} as {answer['role']}", quiet)
    if answer["path"]:
        _say(f"they clone it with: boxctl clone {folder.config.server} {folder.label}/{answer['path']}", quiet)
    else:
        _say(f"they clone it with: boxctl clone {folder.config.server} {folder.label}", quiet)


@share_app.command("ls")
def share_ls(json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List who has access to this box, with their role and folder."""
    with open_folder() as folder:
        members = folder.api.members(folder.box_id)
    if json_out:
        emit_json({"box": folder.label, "members": members})
        return
    for m in members:
        where = m["path"] or "(whole box)"
        you = "  (you)" if m.get("you") else ""
        _say(f"{m['role']:7} {m['user']:20} {where}{you}", quiet)


@share_app.command("rm")
def share_rm(
    user: Annotated[str, typer.Argument(help="The user whose access ends.")],
    path: Annotated[str | None, typer.Argument(help="The shared folder (default: any share of USER).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stop sharing with USER: their next request is refused."""
    with open_folder() as folder:
        where = folder.box_path(path) if path is not None else None
        answer = folder.api.unshare(folder.box_id, user, where)
    if json_out:
        emit_json(answer)
        return
    _say(f"{answer['user']} no longer has access to {folder.label}" + (f" folder {path!r}" if path else ""), quiet)


# --- link -------------------------------------------------------------------------------------


class _LinkGroup(TyperGroup):
    """`boxctl link PATH` makes a link; `link ls` and `link rm` manage them (use ./ls for a file named ls)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
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
    path: Annotated[str, typer.Argument(help="A file or folder of this synced folder ('.' for all of it).")],
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime, like 12h, 7d or 2w.")] = None,
) -> None:
    """Make a read-only link to PATH and print its URL alone on stdout."""
    seconds = parse_duration(expires) if expires else None
    with open_folder() as folder:
        rel = folder.box_path(path)
        answer = folder.api.create_link(folder.box_id, rel, seconds)
        url = folder.config.server + answer["url_path"]
    sys.stdout.write(url + "\n")


@link_app.command("ls")
def link_ls(
    server: Annotated[str | None, typer.Option("--server", help="Outside a synced folder: the server.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List your links (in a synced folder: those of its box), never their secret URLs."""
    with _any_api(server) as (api, box_id):
        links = api.links(box_id)
    if json_out:
        emit_json({"links": links})
        return
    if not links:
        _say("no links", quiet)
    for link in links:
        expires = "never" if not link["expires"] else time.strftime("%Y-%m-%d %H:%M", time.localtime(link["expires"]))
        _say(f"{link['id']:>5}  {link['state']:8} expires {expires:16}  {link['box']}:/{link['path']}"
             f"  (by {link['creator']})", quiet)


@link_app.command("rm")
def link_rm(
    ref: Annotated[str, typer.Argument(help="The link's URL, or its id from 'boxctl link ls'.")],
    server: Annotated[str | None, typer.Option("--server", help="Outside a synced folder: the server.")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Revoke a link at once: its page answers 410 from now on."""
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
    with _any_api(server) as (api, _):
        answer = api.revoke_link(key)
    if json_out:
        emit_json(answer)
    else:
        _say(f"revoked link {answer['id']}", quiet)


@contextmanager
def _any_api(server: str | None) -> Iterator[tuple[Api, int | None]]:
    """Inside a synced folder (of `server`, if given): its device token and box; else the login token."""
    config: BoxConfig | None = None
    try:
        config = BoxConfig.load(find_root(_here()))
        if server is not None and normalize_url(server) != config.server:
            config = None
    except BoxError:
        config = None
    if config is not None:
        creds = load_credentials(config.server)
        api, box_id = Api(Transport(config.server, creds.for_device(config.device_name))), config.box_id
    else:
        creds = load_credentials(server)
        api, box_id = Api(Transport(creds.server, creds.token)), None
    try:
        yield api, box_id
    finally:
        api.close()


# --- passwords --------------------------------------------------------------------------------


def read_password(prompt: str, confirm: bool) -> str:
    """A password from the terminal (asked twice when `confirm`), or one line of stdin when not a tty."""
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ; nothing was changed")
        password = first
    else:
        password = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
    if not password:
        raise UsageError("no password given: type it, pipe it on stdin, or log in with --token TOKEN")
    return password


def password_login(server: str, user: str) -> str:
    """Ask for `user`'s password and exchange it for a new token of this machine."""
    password = read_password(f"password for {user} on {server}: ", confirm=False)
    api = Api(Transport(server, None, retries=1))
    try:
        return api.login(user, password)
    except AuthError:
        raise AuthError(f"wrong user name or password for {user} on {server}") from None
    except ServerRefused as exc:
        raise AuthError(exc.message.replace("server error 429: ", "")) from None
    finally:
        api.close()


def admin_passwd(
    name: Annotated[str, typer.Argument(help="The user whose password is set.")],
    data: Annotated[Path, typer.Option("--data", help="The server's data folder.")],
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
    err.print(f"password set for {name}", markup=False)


__all__ = ["admin_passwd", "check_can_push", "link_app", "parse_duration", "password_login", "share_app"]
