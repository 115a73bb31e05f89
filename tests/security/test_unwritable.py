"""Entries this device cannot write (issue 18): a read-only subfolder (EACCES, or EPERM for root on an
immutable folder) and a name the file system refuses (EINVAL, as FAT does for `:`). Each such entry is
listed as refused, the pull applies everything else, and the cursor stays before it, so the next pull,
once the folder is writable again, brings it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Device
from tests.e2e.helpers import pull, push


def _lock(folder: Path) -> None:
    if os.geteuid() == 0:  # root writes through modes: an immutable folder refuses it (EPERM)
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder immutable here: {done.stderr.decode().strip()}")
    else:
        folder.chmod(0o555)


def _unlock(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


@pytest.fixture
def pair(make_device: Any) -> Iterator[tuple[Device, Device]]:
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    a.write("ro/a.txt", "a\n")
    a.write("ro/b.txt", "deleted later\n")
    push(a)
    b = make_device("desk")
    b.run("clone", b.server.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    yield a, b
    with_flag = subprocess.run(["lsattr", "-d", str(b.root / "ro")], capture_output=True, text=True, check=False)
    if "i" in with_flag.stdout.split(" ")[0]:
        _unlock(b.root / "ro")  # else tmp_path cannot be removed


def test_a_read_only_subfolder_is_listed_and_the_pull_goes_on(pair: tuple[Device, Device]) -> None:
    a, b = pair
    a.write("ro/new.txt", "new in the locked folder\n")
    a.write("ro/sub/deep.txt", "in a folder that cannot be made\n")
    a.write("ro/ln", "")
    (a.root / "ro" / "ln").unlink()
    (a.root / "ro" / "ln").symlink_to("a.txt")
    (a.root / "ro" / "b.txt").unlink()
    a.write("top.txt", "written as usual\n")
    push(a)
    _lock(b.root / "ro")
    try:
        result = b.run("pull", "--json", check=False)
    finally:
        _unlock(b.root / "ro")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    pulled = result.json()
    refused = {r["path"] for r in pulled["refused"]}
    assert {"ro/new.txt", "ro/sub", "ro/ln", "ro/b.txt"} <= refused, pulled
    assert "top.txt" in pulled["written"]
    assert b.read("top.txt") == b"written as usual\n"
    assert b.read("ro/b.txt") == b"deleted later\n"  # not deleted: kept until the next pull can

    again = pull(b)  # writable again: everything refused comes, nothing is lost
    assert {"ro/new.txt", "ro/sub/deep.txt", "ro/ln"} <= set(again["written"]), again
    assert again["deleted"] == ["ro/b.txt"] and again["refused"] == [], again
    assert b.files() == a.files()
    assert os.readlink(b.root / "ro" / "ln") == "a.txt"


SITE = '''
import errno, os
_mkdir, _open = os.mkdir, os.open

def mkdir(path, *args, **kw):
    if ":" in os.fsdecode(path):
        raise OSError(errno.EINVAL, "Invalid argument", os.fsdecode(path))
    return _mkdir(path, *args, **kw)

os.mkdir = mkdir
'''


def test_a_name_the_file_system_refuses_is_listed_and_the_pull_goes_on(
        pair: tuple[Device, Device], tmp_path: Path) -> None:
    a, b = pair
    a.write("odd:dir/f.txt", "a folder name FAT refuses\n")
    a.write("fine.txt", "written as usual\n")
    push(a)
    site = tmp_path / "fat-like"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)  # this device's file system refuses ':' (EINVAL)
    env = b.env() | {"PYTHONPATH": str(site)}
    result = b.run("pull", "--json", check=False, env=env)
    assert result.code == 0, result.err
    refused = {r["path"]: r["reason"] for r in result.json()["refused"]}
    assert "odd:dir" in refused and "Invalid argument" in refused["odd:dir"], refused
    assert b.read("fine.txt") == b"written as usual\n"
    again = pull(b)  # on a file system that takes it, the next pull brings it
    assert "odd:dir/f.txt" in again["written"], again
    assert b.files() == a.files()
