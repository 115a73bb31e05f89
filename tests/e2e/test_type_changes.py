"""Paths that change kind (a file becomes a folder, a folder a file) converge on both devices.

The remote kind wins a path unless the local side changed it too; a local edit that loses its place
is kept as a conflicted copy, synced as a new file by the next push. After every case both devices
hold the same tree, `status` is clean, no temp file is left, and no edit is lost.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from boxctl.local.workspace import TEMP_PREFIX
from tests.conftest import Device
from tests.e2e.helpers import (
    commits,
    conflict_copy_re,
    one_line_error,
    pull,
    push,
    remote_paths,
    revisions,
    status,
)

SIDES = ["laptop", "desk"]


def snapshot(root: Path) -> dict[str, object]:
    """Every path under `root` but .box/: folders as 'dir', files as their bytes, links as ('link', target)."""
    found: dict[str, object] = {}
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        if rel_top == ".box" or rel_top.startswith(".box/"):
            continue
        for name in dirs + files:
            rel = os.path.normpath(os.path.join(rel_top, name)).replace(os.sep, "/")
            if rel == ".box":
                continue
            full = os.path.join(top, name)
            if os.path.islink(full):
                found[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                found[rel] = "dir"
            else:
                found[rel] = Path(full).read_bytes()
    return found


def settle(first: Device, second: Device) -> None:
    """`first` pulls and pushes what that left it (conflicted copies), `second` pulls: then both must be done."""
    pull(first)
    push(first)
    pull(second)


def assert_converged(a: Device, b: Device) -> dict[str, object]:
    """Both devices hold the same tree, with nothing to push or pull and no temp file; return the tree."""
    tree = snapshot(a.root)
    assert snapshot(b.root) == tree
    for device in (a, b):
        st = status(device)
        assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), st
        left = [p for p in device.root.rglob(f"{TEMP_PREFIX}*")]
        assert left == [], left
    held = remote_paths(a)
    assert {p for p, e in held.items() if e["kind"] == "file"} == {p for p, v in tree.items() if isinstance(v, bytes)}
    return tree


def pair(two_devices: tuple[Device, Device], side: str) -> tuple[Device, Device]:
    """(the device that changes the kind, the other one)."""
    laptop, desk = two_devices
    return (laptop, desk) if side == "laptop" else (desk, laptop)


def copies_of(tree: dict[str, object], stem: str, device: str, ext: str = "") -> list[str]:
    pattern = conflict_copy_re(stem, device, ext)
    return sorted(p for p in tree if "/" not in p and pattern.match(p))


@pytest.mark.parametrize("side", SIDES)
def test_file_becomes_folder(two_devices: tuple[Device, Device], side: str) -> None:
    changer, other = pair(two_devices, side)
    changer.write("x", "a file for now\n")
    changer.write("keep.txt", "unrelated\n")
    push(changer)
    pull(other)
    before = len(commits(changer))
    (changer.root / "x").unlink()
    changer.write("x/y", "inside the new folder\n")
    changer.write("x/deeper/z", "deeper\n")
    pushed = push(changer)
    assert pushed["seq"] is not None and len(commits(changer)) == before + 1  # one commit for the whole change
    pulled = pull(other)
    assert (other.root / "x").is_dir() and other.read("x/y") == b"inside the new folder\n"
    assert pulled["conflicts"] == [] and pulled["refused"] == []
    settle(other, changer)
    tree = assert_converged(changer, other)
    assert tree == {"keep.txt": b"unrelated\n", "x": "dir", "x/y": b"inside the new folder\n",
                    "x/deeper": "dir", "x/deeper/z": b"deeper\n"}


@pytest.mark.parametrize("side", SIDES)
def test_folder_becomes_file(two_devices: tuple[Device, Device], side: str) -> None:
    changer, other = pair(two_devices, side)
    changer.write("d/a", "a\n")
    changer.write("d/sub/b", "b\n")
    push(changer)
    pull(other)
    before = len(commits(changer))
    shutil.rmtree(changer.root / "d")
    changer.write("d", "now a file\n")
    pushed = push(changer)
    assert pushed["seq"] is not None and len(commits(changer)) == before + 1
    assert sorted(pushed["deleted"]) == ["d/a", "d/sub", "d/sub/b"] and pushed["modified"] == ["d"]
    pulled = pull(other)
    assert other.read("d") == b"now a file\n"
    assert pulled["conflicts"] == [] and pulled["refused"] == []
    settle(other, changer)
    assert assert_converged(changer, other) == {"d": b"now a file\n"}


@pytest.mark.parametrize("side", SIDES)
def test_renames_onto_the_name_of_a_deleted_path_of_the_other_kind(two_devices: tuple[Device, Device],
                                                                   side: str) -> None:
    changer, other = pair(two_devices, side)
    changer.write("n", "the file that goes\n")
    changer.write("f/a", "moved along with its folder\n")
    changer.write("m/a", "in the folder that goes\n")
    changer.write("g", "the file that takes its name\n")
    push(changer)
    pull(other)
    # A folder renamed onto the name of a deleted file, and a file onto the name of a deleted folder.
    (changer.root / "n").unlink()
    os.rename(changer.root / "f", changer.root / "n")
    shutil.rmtree(changer.root / "m")
    os.rename(changer.root / "g", changer.root / "m")
    push(changer)
    pulled = pull(other)
    assert pulled["conflicts"] == [] and pulled["refused"] == [] and pulled["kept"] == [], pulled
    assert pulled["blocks_reused"] == 2  # both renamed files were copied from where they were, not fetched
    settle(other, changer)
    tree = assert_converged(changer, other)
    assert tree == {"n": "dir", "n/a": b"moved along with its folder\n", "m": b"the file that takes its name\n"}
    # What was at those names stays in their history, restorable.
    kinds = [(r["path"], r["op"], r["kind"]) for r in revisions(other, "n") if r["path"] == "n"]
    assert kinds == [("n", "put", "dir"), ("n", "put", "file")], kinds


def test_folder_becomes_file_keeps_what_the_other_device_had_not_synced(two_devices: tuple[Device, Device]) -> None:
    laptop, desk = two_devices
    laptop.write("d/a", "a v1\n")
    laptop.write("d/b", "b v1\n")
    push(laptop)
    pull(desk)
    desk.write("d/a", "a edited on desk, not pushed\n")
    desk.write("d/new", "new on desk, not pushed\n")
    shutil.rmtree(laptop.root / "d")
    laptop.write("d", "d is a file now\n")
    push(laptop)

    pulled = pull(desk)
    # The remote file takes the name; what desk had not synced moves aside with its folder.
    assert desk.read("d") == b"d is a file now\n"
    [copy] = copies_of(snapshot(desk.root), "d", "desk")
    assert pulled["conflicts"] == [{"path": "d", "copy": copy}]
    assert snapshot(desk.root / copy) == {"a": b"a edited on desk, not pushed\n", "new": b"new on desk, not pushed\n"}
    settle(desk, laptop)
    tree = assert_converged(laptop, desk)
    assert tree == {"d": b"d is a file now\n", copy: "dir", f"{copy}/a": b"a edited on desk, not pushed\n",
                    f"{copy}/new": b"new on desk, not pushed\n"}


@pytest.mark.parametrize("first", ["edit", "folder"])
def test_edit_while_the_other_device_turns_the_file_into_a_folder(two_devices: tuple[Device, Device],
                                                                 first: str) -> None:
    laptop, desk = two_devices  # laptop edits x, desk turns x into a folder
    laptop.write("x", "x v1\n")
    push(laptop)
    pull(desk)
    laptop.write("x", "x v2, edited on laptop\n")
    (desk.root / "x").unlink()
    desk.write("x/y", "y, made on desk\n")
    winner, loser = (laptop, desk) if first == "edit" else (desk, laptop)
    push(winner)
    rejected = loser.run("push", check=False)
    assert rejected.code == 4 and "pull" in one_line_error(rejected), rejected
    settle(loser, winner)
    tree = assert_converged(laptop, desk)
    if first == "edit":
        # The edit took the name first: desk's folder is kept beside it, with what it holds.
        assert tree["x"] == b"x v2, edited on laptop\n"
        [copy] = copies_of(tree, "x", "desk")
        assert tree[f"{copy}/y"] == b"y, made on desk\n"
    else:
        assert tree["x"] == "dir" and tree["x/y"] == b"y, made on desk\n"
        [copy] = copies_of(tree, "x", "laptop")
        assert tree[copy] == b"x v2, edited on laptop\n"
    assert len(tree) == 3, tree


@pytest.mark.parametrize("first", ["edit", "file"])
def test_edit_inside_a_folder_while_the_other_device_turns_it_into_a_file(two_devices: tuple[Device, Device],
                                                                         first: str) -> None:
    laptop, desk = two_devices  # laptop edits d/a, desk turns folder d into a file
    laptop.write("d/a", "a v1\n")
    laptop.write("d/b", "b v1\n")
    push(laptop)
    pull(desk)
    laptop.write("d/a", "a v2, edited on laptop\n")
    shutil.rmtree(desk.root / "d")
    desk.write("d", "d, a file made on desk\n")
    winner, loser = (laptop, desk) if first == "edit" else (desk, laptop)
    push(winner)
    rejected = loser.run("push", check=False)
    assert rejected.code == 4 and "pull" in one_line_error(rejected), rejected
    settle(loser, winner)
    tree = assert_converged(laptop, desk)
    if first == "edit":
        # The folder keeps its name (it holds laptop's edit); desk's file is kept as a conflicted copy.
        assert tree["d"] == "dir" and tree["d/a"] == b"a v2, edited on laptop\n"
        [copy] = copies_of(tree, "d", "desk")
        assert tree[copy] == b"d, a file made on desk\n"
        assert "d/b" not in tree  # desk's delete of it still went through
    else:
        assert tree["d"] == b"d, a file made on desk\n"
        [copy] = copies_of(tree, "d", "laptop")
        assert tree[f"{copy}/a"] == b"a v2, edited on laptop\n"


def test_new_file_inside_a_folder_the_other_device_turned_into_a_file(two_devices: tuple[Device, Device]) -> None:
    laptop, desk = two_devices
    laptop.write("d/a", "a\n")
    push(laptop)
    pull(desk)
    laptop.write("d/new", "new on laptop\n")
    push(laptop)
    shutil.rmtree(desk.root / "d")
    desk.write("d", "d, a file made on desk\n")
    # desk's commit is based on every path it names, yet it would leave the file d holding d/new.
    rejected = desk.run("push", check=False)
    line = one_line_error(rejected)
    assert rejected.code == 4 and "'d'" in line and "d/new" in line and "pull" in line, line
    assert "d/new" in remote_paths(laptop) and remote_paths(laptop)["d"]["kind"] == "dir"
    settle(desk, laptop)
    tree = assert_converged(laptop, desk)
    assert tree["d"] == "dir" and tree["d/new"] == b"new on laptop\n" and "d/a" not in tree
    [copy] = copies_of(tree, "d", "desk")
    assert tree[copy] == b"d, a file made on desk\n"
