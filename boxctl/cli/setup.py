"""`boxctl login`, `init` and `clone`: credentials, this machine's device, and new synced folders."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from box_common.paths import InvalidPath, normalize_path
from box_common.schemas import BoxInfo
from boxctl.api import Api
from boxctl.cli.options import BwOpt, JobsOpt, JsonOpt, Options, QuietOpt, current
from boxctl.cli.prompt import read_password
from boxctl.cli.report import damaged_error, print_damaged
from boxctl.cli.session import make_api, plain_api
from boxctl.config import (
    BOX_DIR,
    BoxConfig,
    Credentials,
    check_ca_cert,
    find_root,
    load_credentials,
    new_folder_id,
    normalize_url,
    save_credentials,
    save_device,
)
from boxctl.engine import Engine, create_index
from boxctl.errors import AuthError, NotABox, ServerRefused, UsageError


def login(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The server, e.g. http://127.0.0.1:8765")],
    user: Annotated[str, typer.Option("--user", help="Your user name.")],
    token: Annotated[str | None, typer.Option("--token", help="A device token from 'boxctl admin add-user'.")] = None,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert", help="Trust this private CA (PEM) for the server, "
                                                 "now and in later commands.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Check and store credentials for a server (in your config folder, mode 0600)."""
    opts = current(ctx, quiet)
    server = normalize_url(url)
    ca = check_ca_cert(ca_cert) if ca_cert is not None else None
    if ca is not None:
        os.environ["BOX_CA_CERT"] = str(ca)
    elif os.environ.get("BOX_CA_CERT"):
        ca = Path(os.environ["BOX_CA_CERT"])
    token = token or os.environ.get("BOX_TOKEN") or password_login(server, user)  # no token: ask the password
    me = plain_api(server, token, retries=2).me()
    path = save_credentials(Credentials(server, user, token), ca_cert=ca)
    if me["user"] != user:
        raise UsageError(f"that token belongs to user {me['user']!r}, not {user!r}")
    opts.printer.say(f"logged in to {server} as {me['user']} (credentials in {path})")


def password_login(server: str, user: str) -> str:
    """Ask for `user`'s password and exchange it for a new token of this machine."""
    password = read_password(f"password for {user} on {server}: ", confirm=False)
    api = plain_api(server, None, retries=1)
    try:
        return api.login(user, password)
    except AuthError:
        raise AuthError(f"wrong user name or password for {user} on {server}") from None
    except ServerRefused as exc:
        raise AuthError(exc.message.replace("server error 429: ", "")) from None
    finally:
        api.close()


def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="The folder to sync (created if absent).")] = Path("."),
    server: Annotated[str | None, typer.Option("--server", help="Server URL (or BOX_SERVER).")] = None,
    box: Annotated[str, typer.Option("--box", help="Box name: created if new, linked if yours.")] = "",
    device: Annotated[str | None, typer.Option("--device", help="This device's name (default: host name).")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make a folder a synced folder of a box (creating the box on the server if needed)."""
    opts = current(ctx, quiet)
    if not box:
        raise UsageError("give the box name with --box NAME")
    root = (opts.here() / directory).resolve() if not directory.is_absolute() else directory
    if (root / BOX_DIR / "config").exists():
        raise UsageError(f"{root} is already a synced folder")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    refuse_nested(root)
    creds = load_credentials(server)
    api = plain_api(creds.server, creds.token)
    info = api.find_box(box) if "/" in box else api.create_box(box)
    if info["role"] not in ("owner", "editor"):
        raise UsageError(f"you can only read box {box!r}; use 'boxctl clone' to get a copy")
    device_id, device_name, api = _register(opts, api, creds, device)
    root.mkdir(parents=True, exist_ok=True)
    _make_folder(root, info, creds.server, device_id, device_name)
    p = opts.printer
    if json_out:
        p.json({"root": str(root), "box": info, "device": {"id": device_id, "name": device_name}})
    else:
        p.say(f"{root} now syncs box {info['owner']}/{info['name']} on {creds.server} as device {device_name!r}")
        p.say("next: 'boxctl push' to upload what is here, 'boxctl pull' to fetch what the box holds")


def clone(
    ctx: typer.Context,
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
    opts = current(ctx, quiet, bwlimit, jobs)
    creds = load_credentials(url)
    root = (opts.here() / (directory or Path(name.rsplit("/", 1)[-1]))).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} already exists and is not an empty folder")
    refuse_nested(root)
    api = plain_api(creds.server, creds.token)
    info = api.find_box(name)
    device_id, device_name, api = _register(opts, api, creds, device)
    root.mkdir(parents=True, exist_ok=True)
    config = _make_folder(root, info, creds.server, device_id, device_name, _selection(only or []))
    p = opts.printer
    with p.progress(not json_out) as update:
        engine = Engine(root, config, api, progress=update, threads=opts.jobs)
        try:
            result = engine.pull()
        finally:
            engine.close()
    if json_out:
        p.json({"root": str(root), "box": info, "pull": result.as_json()})
    else:
        p.say(f"cloned {info['owner']}/{info['name']} into {root}: {len(result.written)} path(s)")
    if result.damaged:
        print_damaged(p, result.damaged)
        raise damaged_error(result.damaged)


def refuse_nested(root: Path) -> None:
    """A usage error if `root` lies inside a synced folder: the outer folder would sync the inner one's
    files as its own, and two boxes would fight over them (its .box/ is never synced either way)."""
    try:
        outer = find_root(root.parent)
    except NotABox:
        return
    try:
        config = BoxConfig.load(outer)
        box = f" (box {config.owner}/{config.box_name})"
    except NotABox:
        box = ""
    raise UsageError(f"{root} is inside the synced folder {outer}{box}; a synced folder cannot hold another: "
                     "choose a folder outside it")


def _register(opts: Options, api: Api, creds: Credentials, device: str | None) -> tuple[int, str, Api]:
    """This machine's device for the server (registered once, then reused), and an API client using its token."""
    name = device or socket.gethostname() or "device"
    known = creds.devices.get(name)
    if known is None or os.environ.get("BOX_TOKEN"):
        answer = api.register_device(name)
        if os.environ.get("BOX_TOKEN"):
            return int(answer["id"]), str(answer["name"]), api
        save_device(creds, name, int(answer["id"]), str(answer["token"]))
        known = creds.devices[name]
    device_api = make_api(opts, creds.server, str(known["token"]))
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
                       only=only or [], folder=new_folder_id())
    config.save(root)
    create_index(root / BOX_DIR)
    return config
