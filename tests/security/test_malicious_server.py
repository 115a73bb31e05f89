"""A malicious (or compromised) server sends paths that escape the synced folder; the real `boxctl`
client must refuse them: nothing is written, replaced or deleted outside its folder, nor in .box/.

The server is the real app, run in a thread, with its `changes` answers poisoned after the first push.
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

from server_min.app import create_app
from tests.conftest import Device, ServerProc, free_port, wait_until


def _snapshot(folder: Path) -> dict[str, bytes | str]:
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
        self.app = create_app(data)
        self.service = self.app.state.service
        self.port = free_port()
        self.poison: list[dict[str, Any]] = []
        honest = self.service.changes

        def changes(caller: Any, box_id: int, cursor: int, limit: int) -> dict[str, Any]:
            answer = honest(caller, box_id, cursor, limit)
            if self.poison:
                answer["entries"] = answer["entries"] + [e | {"seq": answer["cursor"]} for e in self.poison]
            return answer

        self.service.changes = changes
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


HOSTILE = [
    "../escape.txt", "../../escape.txt", "../outside/victim.txt", "../outside/new.txt", "a/../../escape.txt",
    "sub\\..\\..\\escape.txt", ".box/config", ".box/index.db", ".box", "./legit.txt", "legit.txt/", "x//y",
    "cafe\u0301.txt", "nul\x00.txt", "", ".box-tmp-evil",
]


def _pull_and_check(target: Device, outside: Path) -> Any:
    before_outside = _snapshot(outside)
    before_box = _snapshot(target.root / ".box")
    before_parent = sorted(p.name for p in target.root.parent.iterdir())
    result = target.run("pull", "--json", check=False)
    assert "Traceback" not in result.err, result.err
    assert _snapshot(outside) == before_outside  # nothing written, replaced or deleted outside
    assert (outside / "victim.txt").read_text() == "must survive"
    assert sorted(p.name for p in target.root.parent.iterdir()) == before_parent
    assert _snapshot(target.root / ".box").get("config") == before_box.get("config")
    for path in target.root.rglob("*"):
        assert path.is_symlink() or path.resolve().is_relative_to(target.root.resolve()), path
    return result


def test_client_refuses_paths_that_escape_its_folder(evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, outside = evil
    entry = _legit_entry(srv)
    srv.poison = [entry | {"path": p} for p in [*HOSTILE, str(outside / "absolute.txt")]]
    srv.poison += [
        {**entry, "path": "../outside-dir", "kind": "dir", "blocks": [], "size": 0, "content_hash": ""},
        {**entry, "path": "../outside/victim.txt", "op": "delete"},
        {**entry, "path": "../outside", "op": "delete", "kind": "dir"},
    ]
    honest.write("legit.txt", "second version")
    honest.run("push")
    result = _pull_and_check(target, outside)
    assert result.code == 0, result.err
    refused = {r["path"] for r in result.json()["refused"]}
    assert {"../escape.txt", ".box/config", "../outside/victim.txt", "../outside-dir", "../outside",
            str(outside / "absolute.txt")} <= refused, refused
    assert target.read("legit.txt") == b"second version"  # the honest part of the answer still applies


def test_client_never_writes_through_a_symlink_from_the_server(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, outside = evil
    entry = _legit_entry(srv)
    # A link pointing outside is only a link; writing a file through it must be refused.
    srv.poison = [
        {**entry, "path": "door", "kind": "link", "target": str(outside), "blocks": [], "size": 0},
        {**entry, "path": "door/victim.txt"},
        {**entry, "path": "door/through.txt"},
    ]
    honest.write("other.txt", "a commit to carry the poison")
    honest.run("push")
    result = _pull_and_check(target, outside)
    if result.code != 0:  # refusing the whole pull is fine too, as long as it says why in one line
        assert "door" in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (outside / "through.txt").exists()


def _legit_entry(srv: EvilServer) -> dict[str, Any]:
    """A real journal entry of legit.txt, whose blocks the server really holds (so downloads work)."""
    from server_min.service import Caller

    user = srv.service.meta.user_by_name("alice")
    caller = Caller(int(user["id"]), "alice", None)
    box = srv.service.list_boxes(caller)[0]["id"]
    for _ in range(50):
        page = srv.service.tree(caller, box, None, None, "")
        entries = [e for e in page["entries"] if e["path"] == "legit.txt"]
        if entries:
            return dict(entries[0])
        time.sleep(0.1)
    raise AssertionError("legit.txt not on the server")
