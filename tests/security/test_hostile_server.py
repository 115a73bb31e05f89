"""A hostile server against the client, beyond the paths of a pull (test_malicious_server.py):
restore --to, an endless change feed, and names that carry terminal escape sequences.

The server is the real app in a thread (EvilServer), with some of its answers poisoned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from boxctl.engine import MAX_FEED_PAGES, Engine
from boxctl.errors import ServerRefused
from tests.conftest import Device
from tests.security.evil_server import EvilServer, legit_entry, snapshot

ESCAPES = "\x1b]2;pwned\x07title\x1b[2Kerased\x9b31m"


def _poison_tree(srv: EvilServer, extra: list[dict[str, Any]]) -> None:
    honest = srv.service.journal.tree

    def tree(caller: Any, box_id: int, at: int | None, when: float | None, prefix: str) -> dict[str, Any]:
        answer = honest(caller, box_id, at, when, prefix)
        answer["entries"] = answer["entries"] + extra
        return answer

    srv.service.journal.tree = tree


def test_restore_to_refuses_paths_and_links_that_escape_dest(
        evil: tuple[EvilServer, Device, Device, Path], tmp_path: Path) -> None:
    srv, _, target, outside = evil
    entry = legit_entry(srv)
    dest = tmp_path / "restored"
    _poison_tree(srv, [
        entry | {"path": "../escape.txt"},
        entry | {"path": str(outside / "abs.txt")},
        entry | {"path": "a/../../escape2.txt"},
        entry | {"path": ".box/config"},
        {**entry, "path": "pw", "kind": "link", "target": "/etc/passwd", "blocks": [], "size": 0},
        {**entry, "path": "up", "kind": "link", "target": "../../.bashrc", "blocks": [], "size": 0},
        {**entry, "path": "door", "kind": "link", "target": str(outside), "blocks": [], "size": 0},
        entry | {"path": "door/through.txt"},
    ])
    before = snapshot(outside)
    result = target.run("restore", ".", "--rev", str(entry["seq"]), "--to", str(dest), "--json", check=False)
    assert "Traceback" not in result.err, result.err
    assert result.code == 0, result.err
    refused = {r["path"] for r in result.json()["refused"]}
    assert {"../escape.txt", str(outside / "abs.txt"), "a/../../escape2.txt", ".box/config", "pw", "up"} <= refused
    assert snapshot(outside) == before
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()
    assert (dest / "legit.txt").read_bytes() == b"legit content"
    for path in dest.rglob("*"):
        if path.is_symlink():
            assert not Path(path.readlink()).is_absolute(), path
        assert path.is_symlink() or path.resolve().is_relative_to(dest.resolve()), path


def test_a_change_feed_that_does_not_move_on_stops_the_pull(evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, _, target, _ = evil
    honest_changes = srv.service.journal.changes

    def stuck(caller: Any, box_id: int, cursor: int, limit: int, folder: str = "") -> dict[str, Any]:
        answer = honest_changes(caller, box_id, cursor, limit, folder)
        return answer | {"more": True, "cursor": cursor, "head": cursor + 1000}

    srv.service.journal.changes = stuck
    result = target.run("pull", check=False, timeout=60)
    assert result.code == 8, result
    assert "change feed" in result.err and "Traceback" not in result.err


def test_a_change_feed_that_runs_past_its_head_stops_at_the_head(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, _, target, _ = evil
    honest_changes = srv.service.journal.changes
    calls = []

    def endless(caller: Any, box_id: int, cursor: int, limit: int, folder: str = "") -> dict[str, Any]:
        calls.append(cursor)
        answer = honest_changes(caller, box_id, cursor, limit, folder)
        return answer | {"more": True, "cursor": cursor + 1, "head": 50}

    srv.service.journal.changes = endless
    result = target.run("pull", "--json", check=False, timeout=60)
    assert result.code == 0, result
    assert len(calls) <= 50


class _EndlessTransport:
    """Pages forever, each moving the cursor on by one and promising a head far away."""

    received_bytes = 0

    def __init__(self) -> None:
        self.pages = 0

    def get_json(self, route: str, **params: Any) -> dict[str, Any]:
        self.pages += 1
        return {"entries": [], "cursor": params["cursor"] + 1, "head": 1 << 61, "more": True}


def test_a_change_feed_is_bounded_in_pages() -> None:
    engine = Engine.__new__(Engine)
    engine.transport = _EndlessTransport()  # type: ignore[assignment]
    engine.config = type("C", (), {"box_id": 1, "folder": ""})()  # type: ignore[assignment]
    with pytest.raises(ServerRefused, match="pages"):
        engine.remote_changes(0)
    assert engine.transport.pages == MAX_FEED_PAGES  # type: ignore[attr-defined]


def test_names_and_messages_print_their_control_characters_escaped(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, _ = evil
    honest.write("plain.txt", "x")
    honest.run("push", "-m", f"message {ESCAPES}")  # another user's commit message
    entry = legit_entry(srv)
    hostile = entry | {"path": f"evil{ESCAPES}.txt"}  # a name only a hostile server can send
    _poison_tree(srv, [hostile])
    srv.poison = [hostile]
    for args in (("ls",), ("log",), ("pull",)):
        result = target.run(*args, check=False)
        printed = result.out + result.err
        assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed, (args, printed)
        assert "\\x1b]2;pwned" in printed, (args, printed)
    # --json stays exact.
    names = [e["path"] for e in target.run("ls", "--json").json()["entries"]]
    assert f"evil{ESCAPES}.txt" in names
    messages = [c["message"] for c in target.run("log", "--json").json()["commits"]]
    assert f"message {ESCAPES}" in messages


def test_chained_and_escaping_links_from_the_server_are_refused_before_anything_is_made(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, _ = evil
    entry = legit_entry(srv)
    link = {**entry, "kind": "link", "blocks": [], "size": 0}
    srv.poison = [
        link | {"path": "pw", "target": "/etc/passwd"},
        link | {"path": "up3", "target": "../../../.bashrc"},
        {**entry, "path": "d", "kind": "dir", "blocks": [], "size": 0},
        link | {"path": "d/up", "target": ".."},  # fine alone: it points at the root
        link | {"path": "esc", "target": "d/up/../../.bashrc"},  # escapes through d/up
        link | {"path": "ok", "target": "d/up/legit.txt"},
    ]
    honest.write("carrier.txt", "a commit to carry the poison")
    honest.run("push")
    result = target.run("pull", "--json")
    refused = {r["path"] for r in result.json()["refused"]}
    assert {"pw", "up3", "esc"} <= refused, refused
    for name in ("pw", "up3", "esc"):
        assert not (target.root / name).is_symlink(), name
    assert (target.root / "d" / "up").is_symlink() and (target.root / "ok").is_symlink()
    assert (target.root / "ok").read_bytes() == b"legit content"


def test_a_name_or_path_this_disk_cannot_hold_is_listed_and_the_pull_goes_on(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, _ = evil
    entry = legit_entry(srv)
    deep = "/".join(["d" * 200] * 20) + "/f.txt"  # about 4,000 bytes
    srv.poison = [entry | {"path": "n" * 254 + ".txt"}, entry | {"path": deep}]
    honest.write("legit.txt", "third version")
    honest.run("push")
    result = target.run("pull", "--json", check=False)
    assert result.code == 0, result.err
    refused = {r["path"] for r in result.json()["refused"]}
    assert deep in refused, refused
    assert "n" * 254 + ".txt" in refused, refused  # 258 bytes: over the 255 any name may have
    assert target.read("legit.txt") == b"third version"
    again = target.run("pull", "--json", check=False)  # and no later pull is stuck on it
    assert again.code == 0, again.err


def test_a_pull_that_would_fill_the_disk_is_refused_before_it_writes(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    srv, honest, target, _ = evil
    entry = legit_entry(srv)
    # Dedup lets a tiny upload stand for a huge file: the logical size is what must fit.
    srv.poison = [entry | {"path": "huge.bin", "size": 1 << 50}]
    honest.write("legit.txt", "fourth version")
    honest.run("push")
    result = target.run("pull", check=False)
    assert result.code == 1 and "not enough free space" in result.err and "Traceback" not in result.err
    assert target.read("legit.txt") == b"legit content"  # nothing of that pull was written
    assert not (target.root / "huge.bin").exists()


def test_status_prints_names_with_their_control_characters_escaped(
        evil: tuple[EvilServer, Device, Device, Path]) -> None:
    _, _, target, _ = evil
    target.write(f"local{ESCAPES}.txt", "a name a neighbour or a pulled file could carry")
    target.write(".boxignore", f"*.tmp{ESCAPES}\n")
    result = target.run("status", check=False)
    printed = result.out + result.err
    assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed, printed
    assert "\\x1b]2;pwned" in printed, printed
    listed = target.run("status", "--json").json()  # --json stays exact
    assert f"local{ESCAPES}.txt" in listed["added"] + [s["path"] for s in listed.get("skipped", [])]
