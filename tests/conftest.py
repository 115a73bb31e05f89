"""Fixtures that start a real server_min process on a free loopback port and drive the real boxctl."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

BOXCTL = [sys.executable, "-m", "boxctl"]

# Which stores the servers of a run use: "embedded" (SQLite and a block folder, the default) or "shared"
# (PostgreSQL, SeaweedFS's S3 and the PostgreSQL bus: the scale-out deployment). `--store` or BOX_TEST_STORE.
STORES = ("embedded", "shared")
SHARED_BUCKET = "box-tests"
store_mode = os.environ.get("BOX_TEST_STORE", "embedded")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Result:
    """What one boxctl run printed and returned."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class ServerProc:
    """A running `boxctl serve` process and its data folder; in a shared-store run, its own PostgreSQL
    database and S3 bucket too (made at its first start, kept across restarts)."""

    data: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)  # more `boxctl serve` options
    shared: SharedStores | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def store_args(self) -> list[str]:
        """The options naming this server's stores (`--data`, and the shared stores' URLs)."""
        return ["--data", str(self.data), *(self.shared.serve_args() if self.shared else [])]

    def admin_args(self) -> list[str]:
        """The options an admin command needs to reach this server's metadata."""
        return ["--meta", self.shared.meta] if self.shared else ["--data", str(self.data)]

    def env(self) -> dict[str, str]:
        return dict(os.environ, **(self.shared.env if self.shared else {}))

    def count_rows(self, table: str) -> int:
        """How many rows a table of the server's metadata database holds (meta.db, or its PostgreSQL)."""
        if self.shared is not None:
            import psycopg

            with psycopg.connect(self.shared.meta) as conn:
                row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        else:
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.data / "meta.db")) as db:
                row = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def start(self) -> None:
        if self.shared is None and store_mode == "shared":
            self.shared = SharedStores.make()
        self.proc = subprocess.Popen(
            [*BOXCTL, "serve", *self.store_args(), "--port", str(self.port), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env(),
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                return requests.get(f"{self.url}/v1/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, what="server to start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def add_user(self, name: str) -> str:
        res = subprocess.run([*BOXCTL, "admin", "add-user", name, *self.admin_args()],
                             capture_output=True, text=True, check=True, env=self.env())
        token = res.stdout.strip()
        self.tokens[name] = token
        return token


@dataclass
class SharedStores:
    """One server's PostgreSQL database and S3 bucket (on the run's one SeaweedFS), bus on PostgreSQL."""

    meta: str
    bucket: str
    endpoint: str
    env: dict[str, str]

    made: ClassVar[list[SharedStores]] = []
    s3: ClassVar[Any] = None

    @classmethod
    def make(cls) -> SharedStores:
        from tests.pg import create_database
        from tests.s3 import S3Server

        if cls.s3 is None:
            cls.s3 = S3Server(Path(tempfile.mkdtemp(prefix="box-test-s3-")))
            cls.s3.start()
            # One bucket for the run, a prefix per server: SeaweedFS gives every bucket its own volumes,
            # and a bucket per test ran out of them after about thirty (PutObject answered InternalError).
            cls.s3.make_bucket(SHARED_BUCKET)
        stores = cls(create_database(), f"{SHARED_BUCKET}/{uuid.uuid4().hex[:12]}", cls.s3.endpoint, cls.s3.env())
        subprocess.run([sys.executable, "-m", "server_min.cli", "migrate", "--meta", stores.meta], check=True,
                       capture_output=True, env=dict(os.environ, **stores.env))
        cls.made.append(stores)
        return stores

    def serve_args(self) -> list[str]:
        return ["--meta", self.meta, "--blocks", f"s3://{self.bucket}/blocks", "--s3-endpoint", self.endpoint,
                "--notify", "postgresql"]

    def objects(self) -> dict[str, int]:
        """Every object of this server's part of the bucket, as key -> size."""
        bucket, prefix = self.bucket.split("/", 1)
        return {k: n for k, n in type(self).s3.objects(bucket).items() if k.startswith(prefix + "/")}

    @classmethod
    def clean_up(cls) -> None:
        if not cls.made and cls.s3 is None:
            return
        from tests.pg import drop_database

        for stores in cls.made:
            drop_database(stores.meta)
        cls.made.clear()
        if cls.s3 is not None:
            cls.s3.stop()
            cls.s3 = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store", choices=STORES, default=None,
                     help="the servers' stores: embedded (SQLite and a block folder) or shared (PostgreSQL, S3 "
                     "on SeaweedFS, the PostgreSQL bus); default BOX_TEST_STORE, else embedded")


def pytest_configure(config: pytest.Config) -> None:
    global store_mode
    store_mode = config.getoption("--store") or store_mode
    if store_mode not in STORES:
        raise pytest.UsageError(f"BOX_TEST_STORE must be one of {', '.join(STORES)}, not {store_mode!r}")
    config.addinivalue_line("markers", "embedded_only: the test reads the embedded store's files (meta.db, "
                            "packs) directly; a shared-store run leaves it out and says so")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if store_mode != "shared":
        return
    left_out = [item for item in items if item.get_closest_marker("embedded_only")]
    if left_out:
        items[:] = [item for item in items if not item.get_closest_marker("embedded_only")]
        config.hook.pytest_deselected(items=left_out)


def pytest_sessionfinish(session: pytest.Session) -> None:
    SharedStores.clean_up()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    """A fresh server process with its own data folder; killed at the end of the test."""
    srv = ServerProc(tmp_path / "server-data", free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.kill(signal.SIGTERM)


@dataclass
class Device:
    """One device: a folder and a config dir (credentials), driven by the real `boxctl` command."""

    name: str
    root: Path
    config: Path
    server: ServerProc
    user: str = "alice"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BOX_CONFIG_DIR"] = str(self.config)
        env.pop("BOX_TOKEN", None)
        env.pop("BOX_SERVER", None)
        return env

    def run(self, *args: str, cwd: Path | None = None, check: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run([*BOXCTL, *args], cwd=cwd or self.root, env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"boxctl {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return result

    def login(self) -> None:
        token = self.server.tokens.get(self.user) or self.server.add_user(self.user)
        self.run("login", self.server.url, "--user", self.user, "--token", token, cwd=self.config.parent)

    def write(self, rel: str, data: bytes | str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def files(self) -> dict[str, bytes]:
        """Every file under the root except .box/, as path -> bytes."""
        found = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if rel == ".box" or rel.startswith(".box/") or not path.is_file() or path.is_symlink():
                continue
            found[rel] = path.read_bytes()
        return found


@pytest.fixture
def make_device(tmp_path: Path, server: ServerProc) -> Any:
    """Factory: make_device('laptop') logs in and returns a Device (not yet init'ed or cloned)."""

    def make(name: str, user: str = "alice") -> Device:
        config = tmp_path / f"config-{name}"
        config.mkdir()
        device = Device(name, tmp_path / name, config, server, user)
        device.login()
        return device

    return make


@pytest.fixture
def two_devices(make_device: Any) -> tuple[Device, Device]:
    """Device A with an initialised box 'docs', and device B cloned from it."""
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    b = make_device("desk")
    b.run("clone", b.server.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    return a, b


SUMMARY_PROPERTIES = ("crash_summary", "model_summary")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The one-line summaries that crash and model tests record (record_property), after the run, so that
    a note can quote them without -s; junit XML carries them as properties too."""
    lines = [str(value) for kind in ("passed", "failed") for report in terminalreporter.stats.get(kind, [])
             if getattr(report, "when", "") == "call"
             for name, value in getattr(report, "user_properties", []) if name in SUMMARY_PROPERTIES]
    if store_mode == "shared":
        lines.insert(0, "stores: shared (PostgreSQL metadata, S3 blocks on SeaweedFS, PostgreSQL bus); tests "
                     "marked embedded_only were deselected")
    if lines:
        terminalreporter.write_sep("-", "run summaries")
        for line in lines:
            terminalreporter.write_line(line)
