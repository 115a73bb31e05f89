"""A pull that takes a while: edits saved while it runs, conflicts close together, and pulls cut off.

The pull's download goes through a fault-injecting proxy that holds it (a stall) until the test
has done what it wants meanwhile, so there is no sleep and no race with the machine's speed.
Afterwards no edit is lost (DESIGN.md rules 3 and 4), the next push goes through, both devices
end with the same files, and no temp file (`.box-tmp-*`) is left anywhere.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boxctl.engine.conflicts import conflict_name
from tests.conftest import BOXCTL, Device, ServerProc, wait_until
from tests.e2e.helpers import assert_clean, conflict_copy_re, pull, push, status
from tests.faultproxy import FaultProxy

MB = 1 << 20
COPY = conflict_copy_re("notes", "desk", ".txt")


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def temps(root: Path) -> list[str]:
    """Every temp file under `root`, as relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".box-tmp-*"))


def partials(root: Path) -> list[str]:
    """The temp files of big files' downloads (kept after a cut, for the next pull to resume from)."""
    return [t for t in temps(root) if t.rpartition("/")[2].startswith(".box-tmp-p")]


def start(device: Device, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*BOXCTL, *args], cwd=device.root, env=env or device.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert finish(proc)[0] == -signal.SIGKILL


def hold(proxy: FaultProxy) -> None:
    """From now on, a connection that has carried 1 MiB down stalls until `proxy.release()`."""
    proxy.arm(mode="stall", after_bytes=MB, direction="down", stall_seconds=300, probability=1.0,
              max_faults=1000, window=600)


def wait_for(proc: subprocess.Popen[str], condition: Any, what: str) -> None:
    """Wait until `condition` holds while `proc` still runs (it must not end first)."""
    wait_until(lambda: condition() or proc.poll() is not None, timeout=60, interval=0.01, what=what)
    if proc.poll() is not None:
        raise AssertionError(f"the command ended before {what}: {finish(proc)}")


@pytest.fixture
def proxy(server: ServerProc) -> Iterator[FaultProxy]:
    with FaultProxy(server.port, lifetime=600) as p:
        yield p


@pytest.fixture
def pair(make_device: Any, proxy: FaultProxy) -> tuple[Device, Device]:
    """Laptop on a new box (straight to the server), desk cloned from it through the proxy."""
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    a.write("notes.txt", "first version\n")
    push(a)
    b = make_device("desk")
    b.run("login", proxy.url, "--user", b.user, "--token", b.server.tokens[b.user], cwd=b.config.parent)
    b.run("clone", proxy.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    return a, b


@contextlib.contextmanager
def pull_held(b: Device, proxy: FaultProxy) -> Iterator[subprocess.Popen[str]]:
    """Run `boxctl pull` on B and yield while its download is held (its big file's temp is there)."""
    hold(proxy)
    proc = start(b, "pull", "--json")
    try:
        wait_for(proc, lambda: partials(b.root), "the big file's download to start")
        yield proc
    finally:
        proxy.release()  # the caller collects the pull


# --- an edit saved while a pull runs --------------------------------------------------------


@pytest.mark.parametrize("remote", ["deleted", "edited"])
def test_edit_saved_while_a_pull_runs_is_kept_and_pushed(pair: tuple[Device, Device], proxy: FaultProxy,
                                                         remote: str) -> None:
    a, b = pair
    if remote == "deleted":
        (a.root / "notes.txt").unlink()
    else:
        a.write("notes.txt", "edited on the laptop\n")
    a.write("big.bin", rand(4 * MB, 1))  # downloaded before notes.txt is touched: the pull is held there
    push(a)

    with pull_held(b, proxy) as proc:
        b.write("notes.txt", "saved on the desk while it pulled\n")
    code, out, err = finish(proc)
    assert code == 0, err
    assert b.read("big.bin") == a.read("big.bin")
    pulled = json.loads(out)
    if remote == "deleted":
        # The local version stays (the remote delete would have dropped it): a new file for the next push.
        assert b.read("notes.txt") == b"saved on the desk while it pulled\n"
        assert "notes.txt" in pulled["kept"] and "notes.txt" not in pulled["deleted"], pulled
    else:
        # The remote version takes the name; the edit is kept beside it as a conflicted copy.
        assert b.read("notes.txt") == b"edited on the laptop\n"
        [conflict] = pulled["conflicts"]
        assert conflict["path"] == "notes.txt" and COPY.match(conflict["copy"]), pulled
        assert b.read(conflict["copy"]) == b"saved on the desk while it pulled\n"

    pushed = push(b)  # went through: the index knows the remote revision
    assert isinstance(pushed["seq"], int), pushed
    pull(a)
    assert a.files() == b.files()
    texts = set(a.files().values())
    assert b"saved on the desk while it pulled\n" in texts
    if remote == "edited":
        assert b"edited on the laptop\n" in texts
    assert_clean(a)
    assert_clean(b)
    assert temps(b.root) == []


def test_delete_while_a_pull_brings_an_edit_gets_the_edit_back(pair: tuple[Device, Device],
                                                               proxy: FaultProxy) -> None:
    a, b = pair
    a.write("notes.txt", "edited on the laptop\n")
    a.write("big.bin", rand(4 * MB, 2))
    push(a)
    with pull_held(b, proxy) as proc:
        (b.root / "notes.txt").unlink()
    code, _, err = finish(proc)
    assert code == 0, err
    assert b.read("notes.txt") == b"edited on the laptop\n"  # an edit wins over a delete: nothing is lost
    assert push(b)["seq"] is None
    assert_clean(b)


# --- conflicts close together ---------------------------------------------------------------


def test_two_conflicts_within_one_second_keep_every_copy(pair: tuple[Device, Device]) -> None:
    """The copy's name has a one-second stamp: when it is taken (by an earlier copy, or any file), a counter
    makes it unique. To be sure of a clash, every name the next minute could give is taken beforehand."""
    a, b = pair
    now = time.time()
    taken = {conflict_name("notes.txt", "desk", now + s): f"the user's own file {s}\n" for s in range(-1, 60)}
    for name, text in taken.items():
        b.write(name, text)
    copies = []
    for round_ in (1, 2):
        a.write("notes.txt", f"laptop edit {round_}\n")
        push(a)
        b.write("notes.txt", f"desk edit {round_}, never pushed\n")
        [conflict] = pull(b)["conflicts"]
        copies.append(conflict["copy"])
        assert re.search(r" [2-9]\)\.txt$", conflict["copy"]), conflict  # its plain name was taken
    assert len(set(copies)) == 2
    files = b.files()
    for name, text in taken.items():
        assert files[name] == text.encode(), name
    assert {files[c] for c in copies} == {b"desk edit 1, never pushed\n", b"desk edit 2, never pushed\n"}
    assert files["notes.txt"] == b"laptop edit 2\n"
    push(b)
    pull(a)
    assert a.files() == b.files()


# --- pulls cut off: no temp file left ---------------------------------------------------------


def small_files(device: Device, version: int) -> None:
    """250 small files in 5 folders: the first download batch holds exactly these (its block limit)."""
    for i in range(250):
        device.write(f"d{i % 5}/f{i:03}.txt", rand(1500 + i, version * 1000 + i))


def test_pull_killed_anywhere_leaves_no_temp_after_the_next_run(make_device: Any, pair: tuple[Device, Device],
                                                                proxy: FaultProxy) -> None:
    a, b = pair
    small_files(a, 1)
    a.write("zz/big.bin", rand(4 * MB, 3))  # after the small files: their temps wait for it to be renamed
    push(a)

    # 1. Killed while the small files' temps wait for the big file (and its download has begun).
    hold(proxy)
    proc = start(b, "pull", "--json")
    wait_for(proc, lambda: partials(b.root), "the big file's download to start")
    kill(proc)
    proxy.release()
    first = temps(b.root)
    assert {t.split("/")[0] for t in first} >= {"d0", "d1", "d2", "d3", "d4", "zz"}, first
    assert len(first) > 250, first
    # A clone killed at the same point, on a third device.
    c = make_device("phone")
    c.run("login", proxy.url, "--user", c.user, "--token", c.server.tokens[c.user], cwd=c.config.parent)
    hold(proxy)
    proc = subprocess.Popen([*BOXCTL, "clone", proxy.url, "docs", str(c.root), "--device", "phone"], cwd=c.config,
                            env=c.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # (notes.txt comes before zz/big.bin in its held batch here: the small files' temps are the sign.)
    wait_for(proc, lambda: c.root.is_dir() and len(temps(c.root)) >= 250, "the clone's small files' temps")
    kill(proc)
    proxy.release()

    # 2. The box moves on (the partial download is of no use now); a pull killed again at the same point.
    small_files(a, 2)
    a.write("zz/big.bin", rand(4 * MB, 4))
    push(a)
    hold(proxy)
    proc = start(b, "pull", "--json")
    wait_for(proc, lambda: set(partials(b.root)) - set(first), "the new big file's download to start")
    kill(proc)
    proxy.release()
    second = temps(b.root)
    assert not set(first) & set(second), "the second pull kept temps of the first"

    # 3. Status (and push, which looks the same way) removes what a cut-off pull left, except the
    # partial download that the next pull resumes from.
    b.run("status", "--json")
    assert temps(b.root) == partials(b.root) != []

    # 4. The next pull finishes the job and leaves no temp anywhere (the killed clone's folder too).
    result = pull(b)
    assert temps(b.root) == [], result
    assert b.files() == a.files()
    assert_clean(b)
    pull(c)
    assert temps(c.root) == []
    assert c.files() == a.files()
    assert_clean(c)


def test_pull_that_fails_midway_removes_its_temps(pair: tuple[Device, Device], proxy: FaultProxy) -> None:
    a, b = pair
    small_files(a, 1)
    a.write("zz/big.bin", rand(4 * MB, 5))
    push(a)
    hold(proxy)
    # No retries and a short timeout: the held download fails the pull (a clean error, exit code != 0).
    proc = start(b, "pull", env=b.env() | {"BOX_RETRIES": "0", "BOX_TIMEOUT": "2"})
    code, out, err = finish(proc)
    proxy.release()
    assert code not in (0, -signal.SIGKILL) and "Traceback" not in err, (code, out, err)
    # The small files' temps are gone; only the big file's partial download stays, for the next pull.
    assert temps(b.root) == partials(b.root), temps(b.root)
    pull(b)
    assert temps(b.root) == []
    assert b.files() == a.files()


# --- a file saved where the pull is about to make a folder -----------------------------------

# Loaded into the pull (PYTHONPATH): right before the pull makes folder BOX_PAUSE_MKDIR, it touches
# BOX_PAUSE_DIR/paused and waits for BOX_PAUSE_DIR/go, so the test saves a file at that name exactly
# between the pull clearing the way (kinds.make_room) and making the folder.
PAUSE_SITE = '''
import os, time
_mkdir = os.mkdir
_state = {"paused": False}

def mkdir(path, *args, **kw):
    pause = os.environ.get("BOX_PAUSE_DIR")
    if pause and not _state["paused"] and kw.get("dir_fd") is not None \\
            and os.fsdecode(path) == os.environ.get("BOX_PAUSE_MKDIR"):
        _state["paused"] = True
        open(os.path.join(pause, "paused"), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(pause, "go")) and time.monotonic() < deadline:
            time.sleep(0.01)
    return _mkdir(path, *args, **kw)

os.mkdir = mkdir
'''


@pytest.mark.parametrize("remote", ["new folder", "file in a folder"])
def test_file_saved_where_a_pull_makes_a_folder_is_kept_and_the_folder_comes_next(
        pair: tuple[Device, Device], tmp_path: Path, remote: str) -> None:
    """Model run 187: desk's unsynced file `b` is moved aside for the laptop's folder `b`, and the user saves
    `b` again before the pull makes the folder. The pull cannot make it; it must not move its cursor past
    it (the folder and its files would never come, and every later push of `b` is refused, exit 4)."""
    a, b = pair
    if remote == "file in a folder":  # desk had the folder, and turned it into a file (not pushed yet)
        a.write("b/old.txt", "in the folder desk turns into a file\n")
        push(a)
        pull(b)
        shutil.rmtree(b.root / "b")
        a.write("b/c.txt", "new in the folder, from the laptop\n")
    else:  # the folder is new on the server
        a.write("b/b", rand(64 << 10, 7))
    b.write("b", "e2: desk's file b, never pushed\n")
    push(a)

    site = tmp_path / "pause-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PAUSE_SITE)
    env = b.env() | {"PYTHONPATH": str(site), "BOX_PAUSE_DIR": str(site), "BOX_PAUSE_MKDIR": "b"}
    proc = start(b, "pull", "--json", env=env)
    wait_for(proc, lambda: (site / "paused").exists(), "the pull to make folder b")
    b.write("b", "e4: saved on desk while the pull ran\n")
    (site / "go").touch()
    code, out, err = finish(proc)
    assert code == 0 and "Traceback" not in err, (code, out, err)
    first = json.loads(out)
    assert b.read("b") == b"e4: saved on desk while the pull ran\n"  # never overwritten nor dropped
    wanted = {"b", "b/b"} if remote == "new folder" else {"b/c.txt"}
    assert wanted <= {r["path"] for r in first["refused"]}, first

    # The next sync brings the folder (the save is kept as a conflicted copy) and pushes both copies.
    second = pull(b)
    assert (b.root / "b").is_dir(), second
    pushed = push(b)  # not refused (exit 4): the index knows folder b
    assert isinstance(pushed["seq"], int), pushed
    pull(a)
    assert a.files() == b.files()
    texts = set(a.files().values())
    assert {b"e2: desk's file b, never pushed\n", b"e4: saved on desk while the pull ran\n"} <= texts
    if remote == "new folder":
        assert a.read("b/b") == b.read("b/b") == rand(64 << 10, 7)
    else:
        assert b.read("b/c.txt") == b"new in the folder, from the laptop\n"
        assert "b/old.txt" not in a.files()  # desk's delete (folder b became a file) went through
    for device in (a, b):
        st = status(device)
        assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), st
    assert temps(a.root) == temps(b.root) == []
