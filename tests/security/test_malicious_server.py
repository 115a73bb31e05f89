"""A malicious (or compromised) server sends paths that escape the synced folder; the real `boxctl`
client must refuse them: nothing is written, replaced or deleted outside its folder, nor in .box/.

The server is the real app, run in a thread (tests/security/evil_server.py), with its `changes` answers
poisoned after the first push.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Device
from tests.security.evil_server import EvilServer, legit_entry, snapshot

HOSTILE = [
    "../escape.txt", "../../escape.txt", "../outside/victim.txt", "../outside/new.txt", "a/../../escape.txt",
    "sub\\..\\..\\escape.txt", ".box/config", ".box/index.db", ".box", "./legit.txt", "legit.txt/", "x//y",
    "cafe\u0301.txt", "nul\x00.txt", "", ".box-tmp-evil",
]


def _pull_and_check(target: Device, outside: Path) -> Any:
    before_outside = snapshot(outside)
    before_box = snapshot(target.root / ".box")
    before_parent = sorted(p.name for p in target.root.parent.iterdir())
    result = target.run("pull", "--json", check=False)
    assert "Traceback" not in result.err, result.err
    assert snapshot(outside) == before_outside  # nothing written, replaced or deleted outside
    assert (outside / "victim.txt").read_text() == "must survive"
    assert sorted(p.name for p in target.root.parent.iterdir()) == before_parent
    assert snapshot(target.root / ".box").get("config") == before_box.get("config")
    for path in target.root.rglob("*"):
        assert path.is_symlink() or path.resolve().is_relative_to(target.root.resolve()), path
    return result


def test_client_refuses_paths_that_escape_its_folder(evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, outside = evil
    entry = legit_entry(srv)
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
    entry = legit_entry(srv)
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




def test_clone_from_a_poisoned_server_refuses_escaping_paths_and_links(
        evil: tuple[EvilServer, Device, Device, Path], tmp_path: Path) -> None:
    srv, _, target, outside = evil
    entry = legit_entry(srv)
    link = {**entry, "kind": "link", "blocks": [], "size": 0}
    srv.poison = [entry | {"path": p} for p in ["../escape.txt", "a/../../escape.txt", ".box/config",
                                                   str(outside / "absolute.txt")]]
    srv.poison += [link | {"path": "pw", "target": "/etc/passwd"},
                   link | {"path": "up", "target": "../../.bashrc"},
                   link | {"path": "door", "target": str(outside)},
                   entry | {"path": "door/through.txt"}]
    fresh = tmp_path / "fresh"
    before = snapshot(outside)
    result = target.run("clone", srv.url, "b", str(fresh), "--device", "fresh", "--json", cwd=target.config,
                        check=False)
    assert "Traceback" not in result.err, result.err
    assert result.code == 0, result.err
    refused = {r["path"] for r in result.json()["pull"]["refused"]}
    assert {"../escape.txt", "a/../../escape.txt", ".box/config", str(outside / "absolute.txt"), "pw", "up",
            "door"} <= refused, refused
    assert snapshot(outside) == before
    assert not (tmp_path / "escape.txt").exists()
    assert (fresh / "legit.txt").read_bytes() == b"legit content"
    for path in fresh.rglob("*"):
        assert not path.is_symlink(), path
        assert path.resolve().is_relative_to(fresh.resolve()), path
