"""A `.box/` below the root of a synced folder (planted by an editor of a shared folder, or a box
made inside another) is never synced in either direction and never read to choose a server or box."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Device
from tests.e2e.helpers import push, remote_paths, status


def _plant(device: Device, folder: str) -> None:
    config = json.loads((device.root / ".box" / "config").read_text())
    config["server"] = "http://127.0.0.1:9"  # a server the editor runs
    device.write(f"{folder}/.box/config", json.dumps(config))


def test_a_nested_box_folder_is_never_pushed(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    _plant(a, "team/sub")
    a.write("team/sub/notes.txt", "mine")
    result = push(a)
    assert "team/sub/notes.txt" in result["added"]
    assert not any(".box" in p.split("/") for p in remote_paths(a)), remote_paths(a)
    assert {"path": "team/sub/.box", "reason": "a .box/ below the synced folder's root is never synced"} in \
        result["skipped"]
    b.run("pull")
    assert not (b.root / "team/sub/.box").exists()


def test_a_command_inside_a_planted_box_uses_the_outer_folder(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    _plant(a, "team/sub")
    a.write("team/sub/private.txt", "for my box only")
    # Run from inside the planted folder: the outer box is used (the planted server would refuse to connect).
    result: Any = a.run("push", "--json", cwd=a.root / "team" / "sub").json()
    assert "team/sub/private.txt" in result["added"]
    assert status(a)["remote_waiting"] == 0


def test_ignore_rules_that_came_from_the_box_are_shown_and_what_they_leave_out_is_listed(
        two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write(".boxignore", "# planted by an editor\n*\n!.boxignore\n")
    push(a)
    b.run("pull")
    b.write("report.txt", "my new work")
    st = status(b)
    assert st["ignore_synced"] is True and st["ignore_rules"] == ["*", "!.boxignore"]
    assert "report.txt" in st["ignored"]
    human = b.run("status").out
    assert ".boxignore (synced with the box) leaves out" in human and "ignored   report.txt" in human
    pushed = b.run("push").out
    assert "left out by .boxignore" in pushed, pushed
    assert push(b)["ignored"] == st["ignored"]


def test_the_server_refuses_a_box_folder_at_any_depth(two_devices: tuple[Device, Device]) -> None:
    import requests

    a, _ = two_devices
    config = json.loads((a.root / ".box" / "config").read_text())
    token = a.server.tokens["alice"]
    for path in (".box/config", "team/sub/.box/config", "team/.box"):
        answer = requests.post(f"{a.server.url}/v1/boxes/{config['box_id']}/commits", timeout=30,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"message": "plant", "changes": [{"path": path, "op": "put", "kind": "file",
                                                                       "size": 0, "blocks": []}]})
        assert answer.status_code == 400, (path, answer.text)
        assert ".box" in answer.json()["message"]
    assert not any(".box" in p.split("/") for p in remote_paths(a))
