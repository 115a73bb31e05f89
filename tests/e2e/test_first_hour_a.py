"""Issue 21, part A: what a new user met in the first hour (each test fails on the code before the fix).

Real server processes on loopback ports and the real `boxctl` command in device folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import Device
from tests.e2e.helpers import push, status


def second_folder(device: Device, tmp_path: Path, name: str = "second") -> Device:
    """Another synced folder of the same box on the same machine (same config dir, so the same device),
    cloned as the README's tour does: no --device."""
    other = Device(name, tmp_path / name, device.config, device.server, device.user)
    device.run("clone", device.server.url, "docs", str(other.root), cwd=tmp_path)
    return other


def test_status_counts_changes_made_in_another_folder_of_the_same_device(make_device: Any, tmp_path: Path) -> None:
    first = make_device("laptop")
    first.root.mkdir()
    first.run("init", str(first.root), "--server", first.server.url, "--box", "docs")
    second = second_folder(first, tmp_path)
    first.write("report.txt", "draft")
    first.write("notes/a.txt", "a")
    push(first)
    assert status(second)["remote_waiting"] == 3  # notes/, notes/a.txt, report.txt
    assert "3 remote change(s) waiting: run 'boxctl pull'" in second.run("status").out
    assert status(first)["remote_waiting"] == 0
    # `devices` counts per synced folder too: the second folder has not pulled yet.
    (laptop,) = second.run("devices", "--json").json()["devices"]
    behind = {b["folder"]: b["behind"] for b in laptop["boxes"]}
    assert len(behind) == 2 and sorted(behind.values()) == [0, 3], laptop
    assert laptop["behind"] == 3
    second.run("pull")
    assert status(second)["remote_waiting"] == 0
    (laptop,) = second.run("devices", "--json").json()["devices"]
    assert laptop["behind"] == 0, laptop


def test_status_leaves_out_the_folders_own_commits_past_its_cursor(make_device: Any, tmp_path: Path) -> None:
    first = make_device("laptop")
    first.root.mkdir()
    first.run("init", str(first.root), "--server", first.server.url, "--box", "docs")
    second = second_folder(first, tmp_path)
    first.write("one.txt", "1")
    push(first)
    # The second folder pushes without pulling: its cursor stays before the first folder's commit.
    second.write("two.txt", "2")
    second.write("three.txt", "3")
    push(second)
    assert status(second)["remote_waiting"] == 1  # one.txt only, not its own two changes
    assert status(first)["remote_waiting"] == 2
    second.run("pull")
    assert status(second)["remote_waiting"] == 0
