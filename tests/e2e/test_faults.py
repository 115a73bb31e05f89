"""Transfers that are cut off: the client killed (SIGKILL) mid push or pull, and a network that resets,
stalls and drops connections (a fault-injecting proxy on loopback).

After a kill, running the command again finishes the job and moves only what was missing; nothing
is committed until the push that completes, and the synced folder never holds a half-written file
under its real name. Through the proxy, a push and a pull still complete, byte for byte.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import BOXCTL, Device, ServerProc, wait_until
from tests.e2e.helpers import commits, packs
from tests.faultproxy import FaultProxy

MB = 1 << 20
FRAME_HEADER = 37  # bytes of framing per block in an upload (push --json counts them in bytes_sent)
MAX_BLOCK = 4 * MB  # the default box's largest block


# --- helpers --------------------------------------------------------------------------------


def write_random(path: Path, size: int, seed: int) -> str:
    """Write `size` random bytes (in pieces, so memory stays small); return their SHA-256."""
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left:
            piece = rng.bytes(min(left, 16 * MB))
            digest.update(piece)
            out.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(8 * MB):
            digest.update(piece)
    return digest.hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    """Every regular file under `root` except .box/, as relative path -> SHA-256."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".box" or rel.startswith(".box/") or path.is_symlink() or not path.is_file():
            continue
        found[rel] = sha_file(path)
    return found


def temps(root: Path) -> dict[str, int]:
    """Temp files of cut-off transfers in the synced folder, as name -> size."""
    found = {}
    for p in root.rglob(".box-tmp-*"):
        try:
            found[p.relative_to(root).as_posix()] = p.stat().st_size
        except FileNotFoundError:
            continue
    return found


def stored(server: ServerProc) -> int:
    """Bytes in the server's pack files."""
    return sum(packs(server).values())


def start(device: Device, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*BOXCTL, *args], cwd=device.root, env=device.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen[str], condition: Callable[[], Any], what: str, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as `condition` holds; fail if it ends on its own first."""
    try:
        wait_until(lambda: condition() or proc.poll() is not None, timeout=timeout, interval=0.005, what=what)
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the command ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    proc.communicate()


def new_box(make_device: Any, name: str = "laptop", url: str | None = None) -> Device:
    device = make_device(name)
    device.root.mkdir()
    device.run("init", str(device.root), "--server", url or device.server.url, "--box", "docs", "--device", name)
    return device


def clone(make_device: Any, name: str, url: str | None = None) -> Device:
    device = make_device(name)
    device.run("clone", url or device.server.url, "docs", str(device.root), "--device", name, cwd=device.config)
    return device


def login_via(device: Device, url: str) -> None:
    """Store this device's credentials for another URL of the same server (the proxy)."""
    token = device.server.tokens[device.user]
    device.run("login", url, "--user", device.user, "--token", token, cwd=device.config.parent)


def report(label: str, **figures: Any) -> None:
    """Figures worth reading in the test log (pytest -s, or -rA)."""
    print(f"[{label}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# --- kill -9 of the client mid push ---------------------------------------------------------


def killed_push_then_resume(make_device: Any, server: ServerProc, sizes: list[int], stops: list[float]) -> None:
    """Push `sizes` of random data, SIGKILL the client as the server's packs pass each fraction in `stops`,
    then push to the end: only what was missing goes out, and nothing is committed before that."""
    a = new_box(make_device)
    want = {f"data/part{i}.bin": write_random(a.root / f"data/part{i}.bin", n, seed=100 + i)
            for i, n in enumerate(sizes)}
    total = sum(sizes)
    at_kill = []
    for stop in stops:
        threshold = int(total * stop)
        # Held to 40 MB/s so the kill lands mid-push however fast this machine stores blocks.
        proc = start(a, "push", "--json", "-m", "big push", "--bwlimit", "40M")
        kill_when(proc, lambda t=threshold: stored(server) >= t, f"{threshold} bytes to reach the server")
        at_kill.append(stored(server))
        assert commits(a) == [], "a killed push left a visible commit"
        assert a.run("status", "--json").json()["added"], "the killed push recorded its files as synced"
    before = stored(server)
    assert before < total, "the push had sent everything before the last kill"

    result = a.run("push", "--json", "-m", "big push").json()
    after = stored(server)
    blocks = result["blocks_sent"]
    report("push resumed after kills", total_mb=round(total / MB, 1),
           stored_at_kills_mb=[round(s / MB, 1) for s in at_kill],
           resent_mb=round(result["bytes_sent"] / MB, 1), wire_mb=round(result["wire_bytes_sent"] / MB, 1),
           blocks_sent=blocks, stored_mb=round(after / MB, 1))
    assert result["seq"] == 1, result
    # Only what the server lacked went out again: at most the data it had not stored before this run.
    assert result["bytes_sent"] <= total - before + FRAME_HEADER * blocks, result
    assert result["bytes_sent"] < total, result
    assert result["wire_bytes_sent"] < total - before + 2 * MB + FRAME_HEADER * blocks, result
    # The server holds the data once, not once per attempt (random data is stored raw).
    assert total <= after <= total * 1.01 + MB, (total, after)
    log = commits(a)
    assert [c["seq"] for c in log] == [1]
    b = clone(make_device, "desk")
    assert tree_hashes(b.root) == want


def test_push_killed_once_resumes_with_the_rest(make_device: Any, server: ServerProc) -> None:
    killed_push_then_resume(make_device, server, [20 * MB, 28 * MB], [0.2])


@pytest.mark.slow
def test_push_of_300mb_killed_three_times_resumes_with_the_rest(make_device: Any, server: ServerProc) -> None:
    # The last kill leaves more than the 4 x 32 MiB that can be in flight (received, not yet stored), so
    # the resumed push still has something to send however slowly this machine's server stores packs.
    killed_push_then_resume(make_device, server, [100 * MB, 120 * MB, 80 * MB], [0.15, 0.3, 0.45])


# --- kill -9 of the client mid pull ---------------------------------------------------------


def killed_pull_then_resume(make_device: Any, size: int, stops: list[float], old_size: int = 0) -> None:
    """B pulls a `size`-byte file; SIGKILL it as its temp file passes each fraction in `stops`, then pull
    to the end. The real name never holds a partial file (or still holds the old version) and the
    last run downloads only what the killed ones had not."""
    a = new_box(make_device)
    path = "media/movie.bin"
    old = write_random(a.root / path, old_size, seed=1) if old_size else None
    if old:
        a.run("push", "-m", "v1")
    b = clone(make_device, "desk")
    new = write_random(a.root / path, size, seed=2)
    a.run("push", "-m", "v2")
    target = b.root / path

    def real_name_ok() -> None:
        if old is None:
            assert not target.exists(), "a partial file showed up under the real name"
        else:
            st = target.stat()
            assert st.st_size == old_size, "the old version was replaced by a partial file"

    def partial_size() -> int:
        """How far the pull got: its largest temp file (a resumed run writes a new one)."""
        real_name_ok()
        return max(temps(b.root).values(), default=0)

    at_kill = []
    for stop in stops:
        proc = start(b, "pull", "--json")
        kill_when(proc, lambda s=stop: partial_size() >= size * s, f"the pull to write {stop:.0%} of the file")
        real_name_ok()
        if old is not None:
            assert sha_file(target) == old
        at_kill.append(partial_size())
    left = temps(b.root)

    result = b.run("pull", "--json").json()
    report("pull resumed after kills", size_mb=round(size / MB, 1),
           partial_at_kills_mb=[round(s / MB, 1) for s in at_kill],
           temps_before_mb={k: round(v / MB, 1) for k, v in left.items()},
           received_mb=round(result["bytes_received"] / MB, 1), blocks_reused=result["blocks_reused"],
           temps_after=temps(b.root))
    assert result["written"] == [path], result
    assert sha_file(target) == new
    assert result["blocks_reused"] > 0, result
    # It resumed from what the killed runs had written and verified: only the rest was downloaded
    # (at most one block of the partial file, cut short by the kill, is fetched again).
    assert result["bytes_received"] <= size - at_kill[-1] + 2 * MAX_BLOCK, result
    assert temps(b.root) == {}, "temp files of the killed pulls were left in the folder"
    st = b.run("status", "--json").json()
    assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), st


def test_pull_killed_once_resumes_from_its_partial_file(make_device: Any) -> None:
    killed_pull_then_resume(make_device, 64 * MB, [0.4])


def test_pull_of_an_update_killed_keeps_the_old_version_whole(make_device: Any) -> None:
    # The old version is small: a rewrite of a big file tries a delta for each of its blocks, which is slow.
    killed_pull_then_resume(make_device, 48 * MB, [0.5], old_size=3 * MB)


@pytest.mark.slow
def test_pull_of_300mb_killed_twice_resumes_from_both(make_device: Any) -> None:
    killed_pull_then_resume(make_device, 300 * MB, [0.3, 0.65])


# --- a network that resets, stalls and drops (fault-injecting proxy) -------------------------


def proxied_devices(make_device: Any, proxy: FaultProxy) -> tuple[Device, Device]:
    """A on a new box and B cloned from it, both talking to the server through `proxy`."""
    a = make_device("laptop")
    login_via(a, proxy.url)
    a.root.mkdir()
    a.run("init", str(a.root), "--server", proxy.url, "--box", "docs", "--device", "laptop")
    b = make_device("desk")
    login_via(b, proxy.url)
    b.run("clone", proxy.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    return a, b


def push_and_pull_through(make_device: Any, server: ServerProc, size: int, push_faults: dict[str, Any],
                          pull_faults: dict[str, Any], env: dict[str, str] | None = None) -> tuple[int, int]:
    """Push `size` random bytes from A and pull them on B, both through a faulty proxy; both succeed."""
    with FaultProxy(server.port, lifetime=900, seed=7) as proxy:
        a, b = proxied_devices(make_device, proxy)
        want = {"big/one.bin": write_random(a.root / "big/one.bin", size // 2, seed=11),
                "big/two.bin": write_random(a.root / "big/two.bin", size - size // 2, seed=12)}
        a.write("notes.txt", "small file beside the big ones")
        want["notes.txt"] = hashlib.sha256(b"small file beside the big ones").hexdigest()

        proxy.arm(**push_faults)
        started = time.monotonic()
        pushed = a.run("push", "--json", env=a.env() | (env or {})).json()
        push_faults_seen = proxy.stats.faults
        report("push through proxy", mode=proxy.mode, faults=push_faults_seen, events=proxy.stats.events,
               seconds=round(time.monotonic() - started, 1), connections=proxy.stats.connections)
        proxy.disarm()
        assert pushed["seq"] == 1, pushed
        assert push_faults_seen >= 1, "the proxy injected no fault into the push"

        proxy.arm(**pull_faults)
        proxy.stats.resets = proxy.stats.stalls = proxy.stats.closes = 0
        proxy.stats.events.clear()
        started = time.monotonic()
        pulled = b.run("pull", "--json", env=b.env() | (env or {})).json()
        pull_faults_seen = proxy.stats.faults
        report("pull through proxy", mode=proxy.mode, faults=pull_faults_seen, events=proxy.stats.events,
               seconds=round(time.monotonic() - started, 1), connections=proxy.stats.connections)
        proxy.disarm()
        assert sorted(pulled["written"]) == ["big", "big/one.bin", "big/two.bin", "notes.txt"], pulled
        assert pull_faults_seen >= 1, "the proxy injected no fault into the pull"

    assert tree_hashes(b.root) == want
    # What the server holds is right too, as a device that bypasses the proxy sees it.
    c = clone(make_device, "direct")
    assert tree_hashes(c.root) == want
    assert [x["seq"] for x in commits(c)] == [1], "a retried commit was applied twice"
    return push_faults_seen, pull_faults_seen


def test_push_and_pull_survive_connection_resets(make_device: Any, server: ServerProc) -> None:
    """Connections cut by a TCP RST in the middle of an upload body, then of a download stream."""
    push_and_pull_through(
        make_device, server, 24 * MB,
        push_faults={"mode": "reset", "direction": "up", "after_bytes": 3 * MB, "max_faults": 3},
        pull_faults={"mode": "reset", "direction": "down", "after_bytes": 3 * MB, "max_faults": 3},
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reset", "stall", "close"])
def test_large_push_and_pull_survive_a_faulty_network(make_device: Any, server: ServerProc, mode: str) -> None:
    size = 80 * MB
    env = None
    if mode == "reset":  # some connections are cut once they carried 1-5 MB, in either direction
        push = {"mode": "reset", "direction": "both", "after_bytes": 5 * MB, "probability": 0.6, "max_faults": 6}
        pull = push | {"after_bytes": 1 * MB}
    elif mode == "stall":  # answers stop for longer than the client's timeout
        env = {"BOX_TIMEOUT": "2"}
        push = {"mode": "stall", "direction": "down", "after_bytes": 1, "stall_seconds": 5, "probability": 0.3,
                "max_faults": 3}
        pull = push | {"after_bytes": 2 * MB}
    else:  # any piece may end its connection, requests and answers alike
        push = {"mode": "close", "probability": 0.004, "max_faults": 8}
        pull = push
    faults = push_and_pull_through(make_device, server, size, push, pull, env)
    assert min(faults) >= 1


def test_proxy_passes_bytes_through_and_stops_by_itself(server: ServerProc) -> None:
    """The proxy itself: a plain pass-through until armed, bounded faults, and a lifetime."""
    import requests

    with FaultProxy(server.port, mode="reset", after_bytes=1, max_faults=2, lifetime=5) as proxy:
        assert requests.get(f"{proxy.url}/v1/health", timeout=5).ok  # not armed yet: no fault
        proxy.arm()
        failures = 0
        for _ in range(4):
            try:
                requests.get(f"{proxy.url}/v1/health", timeout=5, headers={"Connection": "close"})
            except requests.ConnectionError:
                failures += 1
        assert failures == 2 and proxy.stats.resets == 2  # bounded in count
        assert requests.get(f"{proxy.url}/v1/health", timeout=5).ok
        wait_until(lambda: proxy._thread is not None and not proxy._thread.is_alive(), timeout=10,
                   what="the proxy to stop at the end of its lifetime")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{proxy.url}/v1/health", timeout=5)
