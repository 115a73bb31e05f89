"""Where a command finds its synced folder, credentials and API client; builds the engine it calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from box_common.paths import InvalidPath, normalize_prefix
from boxctl.api import Api
from boxctl.cli.options import Options
from boxctl.config import BoxConfig, find_root, load_credentials, normalize_url
from boxctl.engine import Engine
from boxctl.errors import BoxError, NotFound, UsageError
from boxctl.transport import Transport


def make_api(opts: Options, server: str, token: str) -> Api:
    """An API client with this run's timeout, retry and bandwidth settings."""
    return Api(Transport(server, token, timeout=opts.timeout, retries=opts.retries, bwlimit=opts.bwlimit))


def plain_api(server: str, token: str | None, retries: int | None = None) -> Api:
    """An API client with the transport's own defaults (account, sharing and link commands)."""
    if retries is None:
        return Api(Transport(server, token))
    return Api(Transport(server, token, retries=retries))


@contextmanager
def box_named(config: BoxConfig) -> Iterator[None]:
    """Say which box a synced folder lost access to by its name, not the server's internal id."""
    try:
        yield
    except NotFound as exc:
        if exc.details.get("missing") != "box":
            raise
        raise NotFound(f"you have no access to box {config.owner}/{config.box_name} on {config.server} any more "
                       "(it was unshared, or deleted): this folder can no longer sync; its files stay here",
                       missing="box") from None


@contextmanager
def open_engine(opts: Options, json_mode: bool = False) -> Iterator[Engine]:
    """The engine of the synced folder around the current directory, with a progress bar on a terminal."""
    root = find_root(opts.here())
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    api = make_api(opts, config.server, creds.for_device(config.device_name))
    with opts.printer.progress(not json_mode) as update, box_named(config):
        engine = Engine(root, config, api, progress=update, threads=opts.jobs, delta=opts.delta)
        try:
            yield engine
        finally:
            engine.close()
            api.close()


@dataclass
class Folder:
    """The synced folder a share or link command runs in."""

    root: Path
    config: BoxConfig
    api: Api
    cwd: Path

    @property
    def box_id(self) -> int:
        return self.config.box_id

    @property
    def label(self) -> str:
        return f"{self.config.owner}/{self.config.box_name}"

    def box_path(self, path: str) -> str:
        """A user-given path (relative to the current folder) as a path of this folder's view of the box."""
        given = Path(path)
        full = given if given.is_absolute() else self.cwd / given
        rel = os.path.relpath(os.path.abspath(full), self.root)
        if rel.startswith(".."):
            raise UsageError(f"{path} is not inside the synced folder {self.root}")
        try:
            return normalize_prefix("" if rel == "." else rel.replace(os.sep, "/"))
        except InvalidPath as exc:
            raise UsageError(str(exc)) from None


@contextmanager
def open_folder(opts: Options) -> Iterator[Folder]:
    """The synced folder around the current directory, with an API client on its device token."""
    cwd = opts.here()
    root = find_root(cwd)
    config = BoxConfig.load(root)
    creds = load_credentials(config.server)
    api = plain_api(config.server, creds.for_device(config.device_name))
    try:
        with box_named(config):
            yield Folder(root, config, api, cwd)
    finally:
        api.close()


@contextmanager
def account_api(opts: Options, server: str | None) -> Iterator[Api]:
    """An API client for `server`: the synced folder's device token inside one, else the login token."""
    here = opts.here()  # a -C naming no folder is an error, not "outside a synced folder"
    try:
        root = find_root(here)
        config = BoxConfig.load(root)
        creds = load_credentials(server or config.server)
        token = creds.for_device(config.device_name) if creds.server == config.server else creds.token
    except BoxError:
        creds = load_credentials(server)
        token = creds.token
    api = plain_api(creds.server, token)
    try:
        yield api
    finally:
        api.close()


@contextmanager
def any_api(opts: Options, server: str | None) -> Iterator[tuple[Api, int | None]]:
    """Inside a synced folder (of `server`, if given): its device token and box; else the login token."""
    config: BoxConfig | None = None
    here = opts.here()  # a -C naming no folder is an error, not "outside a synced folder"
    try:
        config = BoxConfig.load(find_root(here))
        if server is not None and normalize_url(server) != config.server:
            config = None
    except BoxError:
        config = None
    if config is not None:
        creds = load_credentials(config.server)
        api, box_id = plain_api(config.server, creds.for_device(config.device_name)), config.box_id
    else:
        creds = load_credentials(server)
        api, box_id = plain_api(creds.server, creds.token), None
    try:
        yield api, box_id
    finally:
        api.close()
