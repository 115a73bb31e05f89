"""The world the attacks run against: one real server process for the module, and five users.

alice owns box 'team' with shared/ and private/. bob is an editor of shared/, carol a viewer of
shared/, dave a viewer of private/. mallory has an account and a box of her own, and no share.
Every attack checks `World.snapshot()` before and after: nothing stored, nothing changed.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.conftest import ServerProc, free_port


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    srv: ServerProc
    tokens: dict[str, str]
    box: int
    files: dict[str, bytes]
    revs: dict[str, int] = field(default_factory=dict)
    mallory_box: int = 0
    before: dict[str, Any] = field(default_factory=dict)

    def settle(self) -> None:
        """Take the 'before' snapshot again: after an attacker stored blocks of its own, in its own account,
        which is allowed and is not what the attack is about."""
        self.before = self.snapshot()

    @property
    def url(self) -> str:
        return self.srv.url

    def call(self, method: str, path: str, user: str | None = None, token: str | None = None,
             **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        token = token if token is not None else (self.tokens[user] if user else None)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def upload(self, user: str, data: bytes) -> requests.Response:
        return self.call("PUT", f"/v1/blocks/{sha(data)}", user, data=data, headers={"X-Box-Codec": "raw"})

    def commit(self, user: str, changes: list[dict[str, Any]], box: int | None = None) -> requests.Response:
        return self.call("POST", f"/v1/boxes/{box or self.box}/commits", user,
                         json={"message": f"by {user}", "changes": changes})

    def put(self, path: str, data: bytes, parent: int = 0) -> dict[str, Any]:
        return {"path": path, "op": "put", "kind": "file", "parent_rev": parent, "size": len(data),
                "mtime_ns": 1_700_000_000_000_000_000, "mode": 0o644, "blocks": [sha(data)] if data else []}

    def packs(self) -> set[str]:
        root = self.srv.data / "blocks" / "packs"
        return {p.name for p in root.rglob("*.pack")}

    def snapshot(self) -> dict[str, Any]:
        """Everything an attack must not change: alice's whole box, members, links, stored packs."""
        tree = self.call("GET", f"/v1/boxes/{self.box}/tree", "alice").json()
        log = self.call("GET", f"/v1/boxes/{self.box}/log", "alice", params={"limit": 1000}).json()
        members = self.call("GET", f"/v1/boxes/{self.box}/members", "alice").json()
        links = self.call("GET", "/v1/links", "alice").json()
        return {"tree": tree, "log": log, "members": members, "links": links, "packs": self.packs()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = ServerProc(tmp_path_factory.mktemp("security") / "server-data", free_port())
    srv.start()
    try:
        tokens = {name: srv.add_user(name) for name in ("alice", "bob", "carol", "dave", "mallory")}
        w = World(srv, tokens, 0, {})
        w.box = int(w.call("POST", "/v1/boxes", "alice", json={"name": "team"}).json()["id"])
        w.files = {
            "shared/plan.txt": b"the shared plan\n",
            "shared/notes/a.md": b"# notes\n",
            "private/salary.txt": b"alice earns " + os.urandom(16).hex().encode(),
            "private/diary.txt": b"dear diary " + os.urandom(16).hex().encode(),
        }
        for data in w.files.values():
            assert w.upload("alice", data).status_code == 200
        answer = w.commit("alice", [w.put(p, d) for p, d in w.files.items()])
        assert answer.status_code == 200, answer.text
        w.revs = dict.fromkeys(w.files, answer.json()["seq"])
        for user, folder, role in (("bob", "shared", "editor"), ("carol", "shared", "viewer"),
                                   ("dave", "private", "viewer")):
            shared = w.call("POST", f"/v1/boxes/{w.box}/members", "alice",
                            json={"user": user, "path": folder, "role": role})
            assert shared.status_code == 200, shared.text
        w.mallory_box = int(w.call("POST", "/v1/boxes", "mallory", json={"name": "mine"}).json()["id"])
        yield w
    finally:
        srv.kill(signal.SIGTERM)


@pytest.fixture
def unchanged(world: World) -> Iterator[World]:
    """Asserts, after the test, that alice's box, its shares, links and the block store did not change."""
    world.before = world.snapshot()
    yield world
    assert world.snapshot() == world.before


def secret_hashes(world: World) -> list[str]:
    return [sha(d) for p, d in world.files.items() if p.startswith("private/")]


def shared_hashes(world: World) -> list[str]:
    return [sha(d) for p, d in world.files.items() if p.startswith("shared/")]


__all__ = ["World", "secret_hashes", "sha", "shared_hashes"]


from tests.security.evil_server import evil  # noqa: E402, F401  (the hostile-server fixture)
