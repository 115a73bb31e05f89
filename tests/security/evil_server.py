"""A malicious (or compromised) server for the client's tests: the real app in a thread, with answers poisoned.

`EvilServer.poison` entries are appended to every answer of /changes; tests may replace other service
methods (tree, changes) on `srv.service` to answer what a hostile server would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from server_min.api import create_app
from server_min.wiring import service_for_data
from tests.conftest import Device, ServerProc, free_port, wait_until


def snapshot(folder: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            found[rel] = path.read_bytes()
        else:
            found[rel] = "dir"
    return found


class EvilServer:
    """The real server app in a thread; `poison` is appended to every answer of /changes that has entries."""

    def __init__(self, data: Path) -> None:
        self.app = create_app(service_for_data(data))
        self.service = self.app.state.service
        self.port = free_port()
        self.poison: list[dict[str, Any]] = []
        honest = self.service.journal.changes

        def changes(caller: Any, box_id: int, cursor: int, limit: int, folder: str = "") -> dict[str, Any]:
            answer = honest(caller, box_id, cursor, limit, folder)
            if self.poison:
                answer["entries"] = answer["entries"] + [e | {"seq": answer["cursor"]} for e in self.poison]
            return answer

        self.service.journal.changes = changes
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> EvilServer:
        self.thread.start()

        def up() -> bool:
            try:
                return requests.get(f"{self.url}/v1/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(up, what="evil server")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def evil(tmp_path: Path) -> Iterator[tuple[EvilServer, Device, Device, Path]]:
    data = tmp_path / "evil-data"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("must survive")
    with EvilServer(data) as srv:
        proc = ServerProc(data, srv.port)
        proc.tokens["alice"] = srv.service.add_user("alice")
        devices = []
        for name in ("honest", "target"):
            config = tmp_path / f"config-{name}"
            config.mkdir()
            device = Device(name, tmp_path / name, config, proc, "alice")
            device.login()
            devices.append(device)
        honest, target = devices
        honest.root.mkdir()
        honest.run("init", str(honest.root), "--server", srv.url, "--box", "b", "--device", "honest")
        honest.write("legit.txt", "legit content")
        honest.run("push")
        target.run("clone", srv.url, "b", str(target.root), "--device", "target", cwd=target.config)
        assert target.read("legit.txt") == b"legit content"
        yield srv, honest, target, outside


def legit_entry(srv: EvilServer) -> dict[str, Any]:
    """A real journal entry of legit.txt, whose blocks the server really holds (so downloads work)."""
    from server_min.service import Caller

    user = srv.service.meta.user_by_name("alice")
    caller = Caller(user.id, "alice", None)
    box = srv.service.boxes.list(caller)[0]["id"]
    for _ in range(50):
        page = srv.service.journal.tree(caller, box, None, None, "")
        entries = [e for e in page["entries"] if e["path"] == "legit.txt"]
        if entries:
            return dict(entries[0])
        time.sleep(0.1)
    raise AssertionError("legit.txt not on the server")
