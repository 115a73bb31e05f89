"""A hostile neighbour on the device: a folder swapped for a symlink while a pull runs (issue 18).

Another process of the user (or anyone who may write in the synced folder) replaces `sub/` with a
symlink to a folder outside while the pull downloads into it. The pull must write nothing outside
(rule 6): its writes go through folder descriptors opened without following links, so the entries
under `sub/` are refused, the rest of the pull goes on, and once the user puts the folder back the
next pull brings them. The pull is held by a stalling proxy until the swap is done: no sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BOXCTL, Device, ServerProc
from tests.e2e.helpers import assert_clean, pull, push
from tests.e2e.test_pull_races import finish, hold, partials, rand, start, temps, wait_for
from tests.faultproxy import FaultProxy

MB = 1 << 20


def tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root` (links not followed): file bytes, 'dir', or 'link -> target'."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                found[rel] = f"link -> {os.readlink(full)}"
            elif full.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = full.read_bytes()
    return found


@pytest.fixture
def proxy(server: ServerProc) -> Iterator[FaultProxy]:
    with FaultProxy(server.port, lifetime=600) as p:
        yield p


@pytest.fixture
def pair(make_device: Any, proxy: FaultProxy) -> tuple[Device, Device]:
    """Laptop on a new box with sub/keep.txt and sub/stay.txt; desk cloned from it through the proxy."""
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    a.write("sub/keep.txt", "deleted on the laptop later\n")
    a.write("sub/stay.txt", "stays\n")
    push(a)
    b = make_device("desk")
    b.run("login", proxy.url, "--user", b.user, "--token", b.server.tokens[b.user], cwd=b.config.parent)
    b.run("clone", proxy.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    return a, b


@pytest.mark.parametrize("points_to", ["elsewhere", "the moved folder"])
def test_folder_swapped_for_a_symlink_mid_pull_gets_nothing_outside(
        pair: tuple[Device, Device], proxy: FaultProxy, tmp_path: Path, points_to: str) -> None:
    a, b = pair
    a.write("sub/big.bin", rand(4 * MB, 7))  # first in the pull's order: the download is held inside it
    a.write("sub/small.txt", "a small new file\n")
    a.write("zz-top.txt", "outside sub/, written as usual\n")
    (a.root / "sub" / "keep.txt").unlink()
    push(a)

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("deleted on the laptop later\n")  # a decoy with the deleted file's name
    away = tmp_path / "away"  # where the neighbour moved the real sub/
    hold(proxy)
    proc = start(b, "pull", "--json")
    try:
        wait_for(proc, lambda: partials(b.root), "the big file's temp to appear in sub/")
        (b.root / "sub").rename(away)
        (b.root / "sub").symlink_to(outside if points_to == "elsewhere" else away, target_is_directory=True)
        before_outside = tree(outside)
    finally:
        proxy.release()
    code, out, err = finish(proc)

    assert code == 0, err
    assert "Traceback" not in err, err
    pulled = json.loads(out)
    refused = {r["path"]: r["reason"] for r in pulled["refused"]}
    assert set(refused) == {"sub/big.bin", "sub/small.txt", "sub/keep.txt"}, pulled
    assert all("\n" not in r and "sub" in r for r in refused.values()), refused  # one line each, naming the folder
    assert pulled["written"] == ["zz-top.txt"], pulled
    assert pulled["deleted"] == [], pulled
    assert b.read("zz-top.txt") == b"outside sub/, written as usual\n"
    # Nothing was written, renamed or deleted outside the synced folder, through the link or not,
    # and the pull's temp in the moved folder (written there before the swap) was removed.
    assert tree(outside) == before_outside == {"keep.txt": b"deleted on the laptop later\n"}
    assert tree(away) == {"keep.txt": b"deleted on the laptop later\n", "stay.txt": b"stays\n"}

    # The user puts the folder back: the next pull brings what was refused, and both sides agree.
    (b.root / "sub").unlink()
    away.rename(b.root / "sub")
    again = pull(b)
    assert sorted(again["written"]) == ["sub/big.bin", "sub/small.txt"], again
    assert again["deleted"] == ["sub/keep.txt"] and again["refused"] == [], again
    assert b.files() == a.files()
    assert temps(b.root) == []
    assert_clean(b)
    assert push(b)["seq"] is None


@pytest.mark.parametrize("points_to", ["elsewhere", "the moved folder"])
def test_restore_to_with_a_folder_swapped_mid_restore_writes_nothing_outside(
        pair: tuple[Device, Device], proxy: FaultProxy, tmp_path: Path, points_to: str) -> None:
    a, b = pair
    a.write("sub/big.bin", rand(4 * MB, 8))  # first in the restore's order: its download is held
    a.write("sub/small.txt", "a small file\n")
    a.write("zz-top.txt", "outside sub/\n")
    seq = push(a)["seq"]
    dest = tmp_path / "restored"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "decoy.txt").write_text("must survive\n")
    away = tmp_path / "away"
    hold(proxy)
    proc = start(b, "restore", ".", "--rev", str(seq), "--to", str(dest), "--json")
    try:
        wait_for(proc, lambda: dest.is_dir() and temps(dest) != [], "the big file's temp to appear in dest/sub")
        (dest / "sub").rename(away)
        (dest / "sub").symlink_to(outside if points_to == "elsewhere" else away, target_is_directory=True)
        before_outside = tree(outside)
        before_away = tree(away)
    finally:
        proxy.release()
    code, out, err = finish(proc)
    assert code == 0, err
    assert "Traceback" not in err, err
    restored = json.loads(out)
    refused = {r["path"] for r in restored["refused"]}
    assert {"sub/big.bin", "sub/small.txt"} <= refused, restored
    assert (dest / "zz-top.txt").read_bytes() == b"outside sub/\n"
    assert tree(outside) == before_outside == {"decoy.txt": b"must survive\n"}
    # Nothing landed in the moved folder either, and the temp made there before the swap is gone.
    assert {k: v for k, v in tree(away).items() if ".box-tmp-" not in k} == {
        k: v for k, v in before_away.items() if ".box-tmp-" not in k}
    assert temps(away) == [], tree(away)


def test_clone_with_a_folder_swapped_mid_clone_gets_nothing_outside(
        make_device: Any, proxy: FaultProxy, tmp_path: Path) -> None:
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    a.write("sub/big.bin", rand(4 * MB, 9))
    a.write("sub/small.txt", "a small file\n")
    a.write("zz-top.txt", "outside sub/\n")
    push(a)
    b = make_device("desk")
    b.run("login", proxy.url, "--user", b.user, "--token", b.server.tokens[b.user], cwd=b.config.parent)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "decoy.txt").write_text("must survive\n")
    away = tmp_path / "away"
    hold(proxy)
    proc = subprocess.Popen([*BOXCTL, "clone", proxy.url, "docs", str(b.root), "--device", "desk", "--json"],
                            cwd=b.config, env=b.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(proc, lambda: b.root.is_dir() and partials(b.root) != [], "the big file's temp to appear in sub/")
        (b.root / "sub").rename(away)
        (b.root / "sub").symlink_to(outside, target_is_directory=True)
        before_outside = tree(outside)
    finally:
        proxy.release()
    code, out, err = finish(proc)
    assert code == 0, err
    assert "Traceback" not in err, err
    refused = {r["path"] for r in json.loads(out)["pull"]["refused"]}
    assert {"sub/big.bin", "sub/small.txt"} <= refused, out
    assert b.read("zz-top.txt") == b"outside sub/\n"
    assert tree(outside) == before_outside == {"decoy.txt": b"must survive\n"}
    # The user puts the folder back: the next pull brings what was refused.
    (b.root / "sub").unlink()
    away.rename(b.root / "sub")
    again = pull(b)
    assert {"sub/big.bin", "sub/small.txt"} <= set(again["written"]), again
    assert b.files() == a.files()
    assert temps(b.root) == []
