"""Crashes in the middle of a push: the server or the client dies by SIGKILL while blocks are in flight.

Afterwards a push must succeed, no commit may be half applied, every earlier version must
restore byte for byte, and a fresh clone must equal the pushing device (DESIGN.md rules 1, 2, 4).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from box_common.content import content_hash
from boxctl.chunking import Chunker
from tests.conftest import BOXCTL, Device, ServerProc, wait_until
from tests.e2e.crashkit import AnswerLoser, start

# the server's data folder is inspected after each kill.
pytestmark = pytest.mark.embedded_only

MB = 1 << 20


# --- helpers --------------------------------------------------------------------------------


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def packs(server: ServerProc) -> set[Path]:
    return set((server.data / "blocks" / "packs").rglob("*.pack"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` (no .box/), as relative path -> bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".box" or rel.startswith(".box/") or path.is_symlink() or not path.is_file():
            continue
        found[rel] = path.read_bytes()
    return found


def folders(files: dict[str, bytes]) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}


def first_version(device: Device) -> None:
    """A few hundred small files in a few folders, and some files of 1-4 MB."""
    for i in range(300):
        device.write(f"small/d{i % 7}/f{i:03}.txt", rand(100 + (i * 37) % 3000, i))
    device.write("big/one.bin", rand(1 * MB, 1001))
    device.write("big/two.bin", rand(2 * MB + 12345, 1002))
    device.write("big/four.bin", rand(4 * MB, 1003))


def second_version(device: Device, new_big: int) -> None:
    """Edit many small files, add more, delete some, edit a big one, and add `new_big` MB of new data."""
    for i in range(0, 300, 3):  # 100 edited
        device.write(f"small/d{i % 7}/f{i:03}.txt", rand(200 + i, 5000 + i))
    for i in range(1, 300, 25):  # 12 deleted
        (device.root / f"small/d{i % 7}/f{i:03}.txt").unlink()
    for i in range(150):  # 150 added, some in new folders
        device.write(f"added/n{i % 5}/g{i:03}.txt", rand(50 + i * 11, 9000 + i))
    two = device.read("big/two.bin")
    device.write("big/two.bin", two[: len(two) // 2] + b"inserted in the middle" + two[len(two) // 2 :])
    for i in range(new_big // 4):
        device.write(f"fresh/blob{i:02}.bin", rand(4 * MB, 7000 + i))


def run_json(device: Device, *args: str) -> Any:
    return device.run(*args, "--json").json()


class Api:
    """Direct reads of the box, as its owner, to check what the server holds."""

    def __init__(self, server: ServerProc, box: str = "docs") -> None:
        self.url = server.url
        self.headers = {"Authorization": f"Bearer {server.tokens['alice']}"}
        self.box = requests.get(f"{self.url}/v1/boxes", params={"name": box}, headers=self.headers,
                                timeout=10).json()["id"]

    def get(self, route: str, **params: Any) -> Any:
        resp = requests.get(f"{self.url}/v1/boxes/{self.box}{route}", params=params, headers=self.headers, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def commit_entries(self, seq: int) -> list[dict[str, Any]]:
        page = self.get("/changes", cursor=seq - 1, limit=1)  # a page always holds whole commits
        return [e for e in page["entries"] if e["seq"] == seq]

    def tree(self, seq: int) -> dict[str, dict[str, Any]]:
        return {e["path"]: e for e in self.get("/tree", at=seq)["entries"]}


def start_push(device: Device) -> subprocess.Popen[str]:
    return subprocess.Popen([*BOXCTL, "push", "--json", "-m", "big push"], cwd=device.root, env=device.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_new_pack(server: ServerProc, before: set[Path], proc: subprocess.Popen[str]) -> None:
    """Block until the server has stored part of this push (a new pack file), then check the push still runs."""
    wait_until(lambda: len(packs(server) - before) > 0 or proc.poll() is not None, timeout=60, interval=0.01,
               what="the first pack of the push to reach the server")
    assert proc.poll() is None, f"push ended before it could be interrupted: {proc.communicate()}"


def check_all_or_nothing(api: Api, expected: dict[int, dict[str, bytes]], chunker: Chunker, tmp: Path) -> None:
    """Every commit is whole: its entries match the folder's change between two versions, and no other commit."""
    head = api.get("")["head"]
    assert head == len(expected), f"expected {len(expected)} commits, the box has {head}"
    log = {c["seq"]: c for c in api.get("/log", limit=100)["commits"]}
    previous: dict[str, bytes] = {}
    for seq in range(1, head + 1):
        files = expected[seq]
        entries = api.commit_entries(seq)
        assert log[seq]["changes"] == len(entries)
        by_path = {e["path"]: e for e in entries}
        changed = {p for p in files if previous.get(p) != files[p]}
        deleted = set(previous) - set(files)
        new_dirs = folders(files) - folders(previous)
        assert {p for p, e in by_path.items() if e["op"] == "put" and e["kind"] == "file"} == changed, seq
        assert {p for p, e in by_path.items() if e["op"] == "delete"} == deleted, seq
        assert {p for p, e in by_path.items() if e["op"] == "put" and e["kind"] == "dir"} == new_dirs, seq
        # The snapshot at this commit holds exactly this version, with the right content ids.
        tree = api.tree(seq)
        assert {p for p, e in tree.items() if e["kind"] == "file"} == set(files), seq
        for path in changed:
            sample = tmp / "sample"
            sample.write_bytes(files[path])
            digests, size = chunker.digests(sample)
            assert (tree[path]["size"], tree[path]["content_hash"]) == (size, content_hash("file", digests, None))
            assert tree[path]["seq"] == seq
        previous = files


def check_restores(device: Device, expected: dict[int, dict[str, bytes]], tmp: Path) -> None:
    for seq, files in expected.items():
        dest = tmp / f"restore-rev{seq}"
        device.run("restore", ".", "--rev", str(seq), "--to", str(dest))
        got = tree_bytes(dest)
        assert set(got) == set(files), f"rev {seq}: paths differ: {set(got) ^ set(files)}"
        bad = [p for p in files if got[p] != files[p]]
        assert not bad, f"rev {seq}: {len(bad)} file(s) differ, e.g. {bad[:3]}"
    one = tmp / "two-at-rev1.bin"
    device.run("restore", "big/two.bin", "--rev", "1", "--to", str(one))
    assert one.read_bytes() == expected[1]["big/two.bin"]


def check_clone(make_device: Any, device: Device, name: str) -> None:
    other = make_device(name)
    other.run("clone", other.server.url, "docs", str(other.root), "--device", name, cwd=other.config)
    mine, theirs = device.files(), other.files()
    assert set(theirs) == set(mine), set(theirs) ^ set(mine)
    assert [p for p in mine if theirs[p] != mine[p]] == []


def init_and_push_first(make_device: Any) -> tuple[Device, dict[str, bytes]]:
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    first_version(a)
    result = run_json(a, "push")
    assert result["seq"] == 1
    return a, a.files()


def chunker_of(device: Device) -> Chunker:
    c = json.loads((device.root / ".box" / "config").read_text())
    return Chunker(c["min_size"], c["avg_size"], c["max_size"])


def assert_clean(device: Device) -> None:
    st = run_json(device, "status")
    assert (st["added"], st["modified"], st["deleted"]) == ([], [], []), st


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["keeps-retrying", "dies-too"])
def test_server_killed_mid_push(make_device: Any, server: ServerProc, tmp_path: Path, client: str) -> None:
    """SIGKILL the server while blocks arrive; the client either retries until it is back, or dies as well."""
    a, v1 = init_and_push_first(make_device)
    second_version(a, new_big=32)
    v2 = a.files()
    before = packs(server)

    proc = start_push(a)
    try:
        wait_for_new_pack(server, before, proc)
        server.kill(signal.SIGKILL)
        assert len(packs(server) - before) >= 1
        if client == "dies-too":
            proc.send_signal(signal.SIGKILL)
        time.sleep(0.5)  # the client sees a dead server for a while
        server.start()  # same port, same data folder
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if client == "dies-too":
        assert proc.returncode == -signal.SIGKILL
    else:
        # The interrupted push either recovered by retrying, or failed with a clear one-line error.
        assert "Traceback" not in err, err
        if proc.returncode != 0:
            assert len([line for line in err.splitlines() if line.strip()]) == 1, err

    again = run_json(a, "push")
    if proc.returncode == 0:
        assert again["seq"] is None, again  # the first push got through after all: nothing left to send
        assert json.loads(out)["seq"] == 2
    else:
        assert again["seq"] == 2, again
    assert_clean(a)
    assert a.files() == v2

    api = Api(server)
    check_all_or_nothing(api, {1: v1, 2: v2}, chunker_of(a), tmp_path)
    check_restores(a, {1: v1, 2: v2}, tmp_path)
    check_clone(make_device, a, "desk")


def test_client_killed_mid_push(make_device: Any, server: ServerProc, tmp_path: Path) -> None:
    a, v1 = init_and_push_first(make_device)
    second_version(a, new_big=32)
    v2 = a.files()
    new_plain = sum(len(v2[p]) for p in v2 if p.startswith("fresh/"))
    before = packs(server)

    proc = start_push(a)
    try:
        wait_for_new_pack(server, before, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    api = Api(server)
    assert api.get("")["head"] == 1  # nothing of the killed push was committed
    arrived = packs(server) - before
    assert arrived

    st = run_json(a, "status")  # the index survived the kill
    assert st["added"] and st["modified"] and st["deleted"]
    resumed = run_json(a, "push")
    assert resumed["seq"] == 2, resumed
    # Blocks that reached the server before the kill are not sent again.
    assert resumed["bytes_plain"] < new_plain, resumed
    assert_clean(a)
    assert a.files() == v2

    check_all_or_nothing(api, {1: v1, 2: v2}, chunker_of(a), tmp_path)
    check_restores(a, {1: v1, 2: v2}, tmp_path)
    check_clone(make_device, a, "desk")


def proxied_device(make_device: Any, proxy: AnswerLoser, name: str = "laptop") -> Device:
    """A device whose every request goes through `proxy`."""
    device = make_device(name)
    token = device.server.tokens["alice"]
    device.run("login", proxy.url, "--user", "alice", "--token", token, cwd=device.config.parent)
    device.root.mkdir()
    device.run("init", str(device.root), "--server", proxy.url, "--box", "docs", "--device", name)
    return device


@pytest.mark.parametrize("then", ["push", "pull", "status"])
def test_push_killed_after_its_commit_landed(make_device: Any, server: ServerProc, tmp_path: Path, then: str) -> None:
    """The commit lands but the push dies before it hears so: the next run recognises its own commit by its key.

    Before, the rerun named the old revisions and the server refused it (exit 4), as if another
    device had moved on. An edit made after the kill stays a local change and is pushed next.
    """
    proxy = AnswerLoser(server.port)
    try:
        a = proxied_device(make_device, proxy)
        for i in range(20):
            a.write(f"docs/f{i:02}.txt", rand(500 + i, i))
        assert run_json(a, "push")["seq"] == 1
        for i in range(0, 20, 2):
            a.write(f"docs/f{i:02}.txt", rand(700 + i, 100 + i))
        (a.root / "docs/f01.txt").unlink()
        a.write("new/g.txt", b"new file")
        v2 = a.files()

        proxy.armed = True
        proc = start(a, "push", "--json")
        try:
            wait_until(proxy.lost.is_set, timeout=60, interval=0.005, what="the commit's answer to be lost")
            wait_until(lambda: Api(server).get("")["head"] == 2, what="the commit to land")
        finally:
            proc.kill()
            proc.wait()
        proxy.armed = False
        a.write("docs/f02.txt", b"edited after the kill")  # a file of the landed commit, changed since
        a.write("docs/f03.txt", b"edited after the kill too")  # one the commit did not hold

        if then != "push":
            st = run_json(a, then)
            if then == "status":
                assert (st["added"], st["deleted"]) == ([], []), st
                assert st["modified"] == ["docs/f02.txt", "docs/f03.txt"], st
            assert (a.root / "docs/f02.txt").read_bytes() == b"edited after the kill"
            assert not list(a.root.rglob("*conflicted copy*"))
        res = a.run("push", "--json", check=False)
        assert res.code == 0, (res.code, res.err)
        assert res.json()["seq"] == 3, res.out
        assert_clean(a)
        v3 = a.files()
        check_restores_of(a, {2: v2, 3: v3}, tmp_path)
        assert not (a.root / ".box" / "pending-commit").exists()
    finally:
        proxy.close()


def test_push_that_never_sent_its_commit_leaves_no_trace(make_device: Any, server: ServerProc) -> None:
    """A pending commit the server never received is dropped; its changes are pushed as local changes."""
    a, _ = init_and_push_first(make_device)
    a.write("small/d0/f000.txt", b"changed")
    (a.root / ".box" / "pending-commit").write_text('{"key": "never-sent-0123456789"}')
    assert run_json(a, "push")["seq"] == 2
    assert not (a.root / ".box" / "pending-commit").exists()
    assert_clean(a)


def check_restores_of(device: Device, expected: dict[int, dict[str, bytes]], tmp: Path) -> None:
    """Every version in `expected` restores byte for byte."""
    for seq, files in expected.items():
        dest = tmp / f"restore-{seq}"
        device.run("restore", ".", "--rev", str(seq), "--to", str(dest))
        got = tree_bytes(dest)
        assert got.keys() == files.keys(), (seq, got.keys() ^ files.keys())
        assert [p for p in files if got[p] != files[p]] == [], seq


def test_push_resumed_with_many_blocks_on_the_server_asks_signatures_in_parts(make_device: Any,
                                                                              server: ServerProc) -> None:
    """A push whose first 1,750 blocks the server already holds (as after a killed push) and then 2,000
    edited files: the batch of 2,000 asked for 2,000 delta signatures at once, over the server's limit
    of 1,000, and the push failed (exit 8). Found by the staged-push kill points."""
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    for i in range(3750):
        a.write(f"many/f{i:04}.txt", f"first {i}\n")
    assert run_json(a, "push")["seq"] == 1
    b = make_device("desk")
    b.run("clone", server.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    for i in range(1750):  # A puts these contents on the server under other names; B does not pull them
        a.write(f"other/g{i:04}.txt", f"second {i}\n")
    assert run_json(a, "push")["seq"] == 2
    for i in range(3750):
        b.write(f"many/f{i:04}.txt", f"second {i}\n" if i < 1750 else f"edited {i}\n")
    res = b.run("push", "--json", check=False)
    assert res.code == 0, res.err
    assert res.json()["seq"] == 3
