"""Several server processes on shared stores behind nginx (issue 20): PostgreSQL metadata, S3 blocks on
SeaweedFS, long polls woken through PostgreSQL's LISTEN/NOTIFY, deploy/nginx.conf as the balancer.

Every test here runs on the shared stores whatever the run's --store: they are the scale-out deployment.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from box_common.frames import CODEC_RAW, Frame, encode_frames
from tests.bus_servers import REDIS_URL
from tests.conftest import BOXCTL, Device, ServerProc, SharedStores, free_port, wait_until
from tests.e2e.helpers import commits, random_bytes
from tests.nginx import Nginx


@dataclass
class Front:
    """What devices see of the cluster: the balancer's URL, users made through the shared metadata."""

    url: str
    first: ServerProc
    tokens: dict[str, str] = field(default_factory=dict)

    def add_user(self, name: str) -> str:
        token = self.first.add_user(name)
        self.tokens[name] = token
        return token


@dataclass
class Cluster:
    servers: list[ServerProc]
    nginx: Nginx
    front: Front
    tmp: Path

    def device(self, name: str, user: str = "alice") -> Device:
        config = self.tmp / f"config-{name}"
        config.mkdir()
        device = Device(name, self.tmp / name, config, self.front, user)  # type: ignore[arg-type]
        device.login()
        return device

    def api(self, server: ServerProc | Front, token: str) -> Any:
        from boxctl.api import Api
        from boxctl.transport import Transport

        return Api(Transport(server.url, token, retries=0))


@pytest.fixture(params=["postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Two server processes on one PostgreSQL database and one bucket, behind nginx; their long polls woken
    through the bus named by the param (PostgreSQL's LISTEN/NOTIFY, or Redis pub/sub)."""
    shared = SharedStores.make()
    bus = ["--notify", request.param] if request.param != "postgresql" else []
    servers = [ServerProc(tmp_path / f"server-{i}", free_port(), shared=shared,
                          extra=["--trust-proxy", "127.0.0.1", *bus]) for i in range(2)]
    for server in servers:
        server.start()
    nginx = Nginx(tmp_path / "nginx", free_port(), [s.port for s in servers])
    try:
        nginx.start()
        yield Cluster(servers, nginx, Front(nginx.url, servers[0]), tmp_path)
    finally:
        nginx.stop()
        for server in servers:
            server.kill(signal.SIGKILL)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_two_devices_sync_through_the_balancer(cluster: Cluster) -> None:
    a = cluster.device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", cluster.front.url, "--box", "docs", "--device", "laptop")
    a.write("notes/a.txt", "from the laptop\n")
    a.write("big.bin", random_bytes(3 << 20, 1))
    a.run("push", "-m", "first")
    b = cluster.device("desk")
    b.run("clone", cluster.front.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    assert b.files() == a.files()
    b.write("notes/b.txt", "from the desk\n")
    b.write("notes/a.txt", "edited on the desk\n")
    b.run("sync")
    a.run("sync")
    assert a.files() == b.files()
    assert a.read("notes/a.txt") == b"edited on the desk\n"


@pytest.mark.parametrize("cluster", ["postgresql", REDIS_URL], indirect=True)
def test_a_long_poll_on_one_process_wakes_for_a_push_through_the_other(cluster: Cluster) -> None:
    token = cluster.front.add_user("alice")
    first, second = cluster.servers
    api1, api2 = cluster.api(first, token), cluster.api(second, token)
    box = api2.create_box("docs")
    device = api2.register_device("laptop")
    answers: list[tuple[dict[str, Any], float]] = []
    waiting = threading.Event()

    def wait() -> None:
        waiting.set()
        answer = api1.wait(box["id"], box["head"], timeout=60)
        answers.append((answer, time.monotonic()))

    poll = threading.Thread(target=wait)
    poll.start()
    waiting.wait(10)
    # The poll is registered on process 1 once its connection is held there.
    wait_until(lambda: first_holds_a_poll(first), what="the long poll to be held by process 1")
    sent = time.monotonic()
    done = api2.commit(box["id"], {"message": "one", "device": device["id"], "key": "key-one-0001", "changes": [
        {"path": "a.txt", "op": "put", "kind": "file", "parent_rev": 0, "size": 0, "mtime_ns": 1, "mode": 0o644,
         "blocks": []}]})
    poll.join(30)
    assert answers, "the long poll did not answer"
    answer, woke = answers[0]
    assert answer["changes"] is True and answer["head"] == done["seq"]
    assert woke - sent < 5.0, f"woken {woke - sent:.2f} s after the commit"


def first_holds_a_poll(server: ServerProc) -> bool:
    """True once the server process holds an open client connection besides the health checks."""
    import psutil

    assert server.proc is not None
    conns = psutil.Process(server.proc.pid).net_connections(kind="tcp")
    return any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port for c in conns)


def test_blocks_uploaded_on_one_process_commit_and_stage_on_the_other(cluster: Cluster) -> None:
    token = cluster.front.add_user("alice")
    first, second = cluster.servers
    api1, api2 = cluster.api(first, token), cluster.api(second, token)
    box = api1.create_box("docs")
    device = api1.register_device("laptop")
    data = random_bytes(200_000, 7)
    api1.upload_pack(encode_frames([Frame(digest(data), CODEC_RAW, data)]))
    assert api2.missing([digest(data)]) == set()
    change = {"path": "a.bin", "op": "put", "kind": "file", "parent_rev": 0, "size": len(data), "mtime_ns": 1,
              "mode": 0o644, "blocks": [digest(data)]}
    done = api2.commit(box["id"], {"message": "across", "device": device["id"], "key": "key-one-0001",
                                   "changes": [change]})
    assert api1.block(digest(data)) == data
    # A staged commit: the stage made on process 2, a part staged on process 1, committed on process 2.
    stage = api2.new_stage(box["id"])
    api1.stage(box["id"], stage, [dict(change, path="b.bin")])
    staged = api2.commit(box["id"], {"message": "staged", "device": device["id"], "key": "key-two-0002", "changes": [],
                                     "stage": stage})
    assert staged["seq"] == done["seq"] + 1
    assert {e["path"] for e in api1.tree(box["id"])["entries"]} == {"a.bin", "b.bin"}


def test_a_process_killed_mid_push_leaves_one_commit_and_every_version_whole(cluster: Cluster) -> None:
    a = cluster.device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", cluster.front.url, "--box", "docs", "--device", "laptop")
    versions: dict[str, bytes] = {}
    for n in range(3):
        a.write("data.bin", random_bytes(2 << 20, 100 + n))
        a.run("push", "-m", f"v{n}")
        versions[f"v{n}"] = a.read("data.bin")
    before = len(commits(a))
    big = random_bytes(48 << 20, 999)
    a.write("data.bin", big)
    objects = len(cluster.servers[0].shared.objects())  # type: ignore[union-attr]
    push = subprocess.Popen([*BOXCTL, "push", "-m", "during the kill", "--bwlimit", "8M"], cwd=a.root,
                            env=a.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(cluster.servers[0].shared.objects()) > objects,  # type: ignore[union-attr]
               timeout=60, what="the push's first pack to land")
    assert push.poll() is None, "the push ended before the kill"
    cluster.servers[0].kill(signal.SIGKILL)
    out, err = push.communicate(timeout=300)
    assert push.returncode == 0, f"push exited {push.returncode}: {out}\n{err}"
    log = commits(a)
    assert len(log) == before + 1 and sum(c["message"] == "during the kill" for c in log) == 1
    b = cluster.device("desk")
    b.run("clone", cluster.front.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    assert b.read("data.bin") == big
    seqs = {c["message"]: c["seq"] for c in log}
    for message, expected in versions.items():
        b.run("restore", "data.bin", "--rev", str(seqs[message]), "--to", str(b.config / f"{message}.bin"))
        assert (b.config / f"{message}.bin").read_bytes() == expected, f"version {message} differs"
