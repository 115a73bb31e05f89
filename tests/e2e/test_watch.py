"""`boxctl watch`, devices, selective sync and long polling, end to end (issue 6).

Real `boxctl watch DIR --log-file F` processes on separate device folders against a real server
process on loopback. Every wait is a condition with a deadline (tests.conftest.wait_until); every
watch process is killed in the fixture's teardown, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from watchdog.events import FileModifiedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from tests.conftest import BOXCTL, Device, ServerProc, free_port, wait_until
from tests.e2e.helpers import STAMP, conflict_copy_re, one_line_error, random_bytes, revisions, status

TEMP_PREFIX = ".box-tmp-"
DIR = None  # a folder in a snapshot
Snapshot = dict[str, bytes | None]


# --- helpers --------------------------------------------------------------------------------


def snapshot(root: Path) -> Snapshot | None:
    """Every file (path -> bytes) and folder (path -> None) under `root` but .box/; None if it moved under us."""
    found: Snapshot = {}
    try:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if rel == ".box" or rel.startswith(".box/"):
                continue
            if path.is_symlink():
                found[rel] = b"->" + os.readlink(path).encode()
            elif path.is_dir():
                found[rel] = DIR
            else:
                found[rel] = path.read_bytes()
    except OSError:
        return None  # a file was renamed or deleted while we walked: look again
    return found


def temps(root: Path) -> list[str]:
    """Temp files a transfer left (or is writing) under `root`."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"{TEMP_PREFIX}*"))


@dataclass
class Watch:
    """One running `boxctl watch` process."""

    device: Device
    proc: subprocess.Popen[bytes]
    log: Path
    out: Path
    err: Path
    expected_exit: bool = False  # a test that expects this watch to stop by itself sets it

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stderr_text(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def send(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 45) -> int:
        """Send `sig` and return the exit code (fails if the process does not exit in time)."""
        self.send(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"watch on {self.device.name} did not exit {timeout}s after signal {sig}") from None

    def report(self) -> str:
        state = "running" if self.alive() else f"exited {self.proc.returncode}"
        snap = snapshot(self.device.root) or {}
        return (f"--- watch {self.device.name} ({state}); files: {sorted(snap)}\n"
                f"log:\n{self.log_text()[-3000:]}\nstderr:\n{self.stderr_text()[-3000:]}")


@dataclass
class Watches:
    """Starts watch processes and kills every one of them at teardown."""

    tmp: Path
    started: list[Watch] = field(default_factory=list)

    def start(self, device: Device, *extra: str) -> Watch:
        n = len(self.started)
        log = self.tmp / f"watch-{device.name}-{n}.log"
        out, err = self.tmp / f"watch-{device.name}-{n}.out", self.tmp / f"watch-{device.name}-{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen([*BOXCTL, "watch", str(device.root), "--log-file", str(log), *extra],
                                    cwd=device.root, env=device.env(), stdout=stdout, stderr=stderr)
        watch = Watch(device, proc, log, out, err)
        self.started.append(watch)
        return watch

    def report(self) -> str:
        return "\n".join(w.report() for w in self.started)

    def kill_all(self) -> None:
        for w in self.started:
            if w.alive():
                w.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)


@pytest.fixture
def watches(tmp_path: Path, server: ServerProc) -> Iterator[Watches]:
    ws = Watches(tmp_path)
    try:
        yield ws
    finally:
        ws.kill_all()
        # A long poll whose client is gone keeps a SIGTERMed server alive until the poll's timeout
        # (up to 30 s): the server fixture's SIGTERM would time out, so end the server here.
        server.kill()


@pytest.fixture
def three_devices(two_devices: tuple[Device, Device], make_device: Any) -> tuple[Device, Device, Device]:
    a, b = two_devices
    c = make_device("phone")
    c.run("clone", c.server.url, "docs", str(c.root), "--device", "phone", cwd=c.config)
    return a, b, c


def wait_for(watches: Watches, condition: Callable[[], Any], what: str, timeout: float = 30,
             interval: float = 0.05) -> Any:
    """wait_until, failing at once if a watch died, and printing every watch's log on failure."""

    def check() -> Any:
        for w in watches.started:
            if not w.alive() and w.proc.returncode != 0 and not w.expected_exit:
                raise AssertionError(f"watch on {w.device.name} exited {w.proc.returncode}")
        return condition()

    try:
        return wait_until(check, timeout=timeout, interval=interval, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{watches.report()}") from None


def converge(watches: Watches, devices: list[Device], expected: Snapshot | None = None,
             timeout: float = 30, what: str = "devices to converge") -> Snapshot:
    """Wait until every device holds the same tree (and, if given, exactly `expected`); return it."""

    def same() -> Snapshot | None:
        snaps = [snapshot(d.root) for d in devices]
        if any(s is None for s in snaps):
            return None
        first = snaps[0]
        assert first is not None
        if any(s != first for s in snaps[1:]) or any(temps(d.root) for d in devices):
            return None
        if expected is not None and first != expected:
            return None
        return first or {"": DIR}

    return wait_for(watches, same, what, timeout)


def server_tree(device: Device) -> dict[str, dict[str, Any]]:
    return {e["path"]: e for e in device.run("ls", "--remote", "--json").json()["entries"]}


def snap_of_server(device: Device) -> dict[str, str]:
    """The server's head as path -> kind (what `ls --remote` shows)."""
    return {p: e["kind"] for p, e in server_tree(device).items()}


def connected(watch: Watch, server: ServerProc) -> bool:
    """True if the watch process holds an open TCP connection to the server (its long poll)."""
    try:
        conns = psutil.Process(watch.proc.pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.raddr and c.raddr.port == server.port and c.status == psutil.CONN_ESTABLISHED for c in conns)


def snap_kinds(snap: Snapshot) -> dict[str, str]:
    return {p: ("dir" if v is None else "link" if v.startswith(b"->") else "file") for p, v in snap.items()}


# --- watch: everything converges -------------------------------------------------------------


def test_create_edit_delete_rename_and_nested_folders_converge(
        three_devices: tuple[Device, Device, Device], watches: Watches) -> None:
    a, b, c = three_devices
    devices = [a, b, c]
    for d in devices:
        watches.start(d)

    # Create, on three devices at once: a file, a file deep in new folders, an empty folder.
    blob = random_bytes(700_000, 1)
    a.write("hello.txt", "hello\n")
    b.write("nested/deep/dir/blob.bin", blob)
    (c.root / "empty").mkdir()
    converge(watches, devices, {"hello.txt": b"hello\n", "nested": DIR, "nested/deep": DIR,
                                "nested/deep/dir": DIR, "nested/deep/dir/blob.bin": blob, "empty": DIR},
             what="created paths on every device")

    # Edit on another device than the one that created it.
    b.write("hello.txt", "hello, edited on desk\n")
    converge(watches, devices, what="the edit")
    assert a.read("hello.txt") == c.read("hello.txt") == b"hello, edited on desk\n"

    # Rename a file into a new folder, and rename a folder that holds a file.
    (c.root / "greetings").mkdir()
    os.rename(c.root / "hello.txt", c.root / "greetings/hello.txt")
    os.rename(a.root / "nested/deep", a.root / "nested/shallow")
    snap = converge(watches, devices, {
        "greetings": DIR, "greetings/hello.txt": b"hello, edited on desk\n", "nested": DIR,
        "nested/shallow": DIR, "nested/shallow/dir": DIR, "nested/shallow/dir/blob.bin": blob, "empty": DIR,
    }, what="renames")

    # Delete a whole tree on one device and an empty folder on another.
    for p in sorted((b.root / "nested").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (b.root / "nested").rmdir()
    (a.root / "empty").rmdir()
    snap = converge(watches, devices, {"greetings": DIR, "greetings/hello.txt": b"hello, edited on desk\n"},
                    what="deletes")

    # The server holds what the devices hold, nobody made a conflicted copy, and every device is clean.
    assert snap_of_server(a) == snap_kinds(snap)
    for d in devices:
        st = status(d)
        assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), (d.name, st)
    assert not any("conflict" in w.log_text() for w in watches.started), watches.report()
    # The history kept every version of the renamed file.
    assert [r["op"] for r in revisions(a, "hello.txt")] == ["delete", "put", "put"]
    for w in watches.started:
        assert w.alive(), w.report()
        assert w.stop() == 0, w.report()


@pytest.mark.slow
def test_burst_of_changes_becomes_few_commits(two_devices: tuple[Device, Device], watches: Watches) -> None:
    """An unpacked archive (many files at once) is debounced into one commit, not one per file."""
    a, b = two_devices
    wa = watches.start(a)
    watches.start(b)
    a.write("seed.txt", "x")
    converge(watches, [a, b], what="the first file")
    before = len(a.run("log", "--json", "-n", "1000").json()["commits"])
    expected: Snapshot = {"seed.txt": b"x", "tree": DIR}
    for i in range(200):
        folder = f"tree/d{i % 10}"
        expected[folder] = DIR
        expected[f"{folder}/f{i}.txt"] = f"file {i}\n".encode()
        a.write(f"{folder}/f{i}.txt", f"file {i}\n")
    converge(watches, [a, b], expected, what="200 files")
    after = a.run("log", "--json", "-n", "1000").json()["commits"]
    assert len(after) - before <= 3, [c["message"] for c in after[: len(after) - before]]
    assert wa.stop() == 0


def test_concurrent_edits_keep_both_versions_on_every_device(
        two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    for d in (a, b):
        watches.start(d)
    a.write("shared.txt", "original\n")
    converge(watches, [a, b], {"shared.txt": b"original\n"}, what="the original")

    # Both edit within a millisecond: neither can have seen the other's edit.
    va, vb = b"edited on laptop\n", b"edited on desk, a different length\n"
    a.write("shared.txt", va)
    b.write("shared.txt", vb)

    pattern = re.compile(rf"^shared \(conflicted copy from (laptop|desk) {STAMP}\)\.txt$")

    def both_versions() -> Snapshot | None:
        snap = snapshot(a.root)
        if snap is None or snap != snapshot(b.root) or temps(a.root) or temps(b.root):
            return None
        copies = [p for p in snap if pattern.match(p)]
        if len(snap) != 2 or len(copies) != 1 or "shared.txt" not in snap:
            return None
        return snap

    snap = wait_for(watches, both_versions, "both versions on both devices")
    copy = next(p for p in snap if p != "shared.txt")
    assert {snap["shared.txt"], snap[copy]} == {va, vb}
    # The copy is named after the device whose edit came second, and holds that device's edit.
    loser = pattern.match(copy).group(1)  # type: ignore[union-attr]
    assert snap[copy] == (va if loser == "laptop" else vb)
    assert conflict_copy_re("shared", loser, ".txt").match(copy)
    # The server holds both, and the log of each watch says what happened.
    assert set(server_tree(a)) == {"shared.txt", copy}
    assert "conflict shared.txt" in next(w for w in watches.started if w.device.name == loser).log_text()


# --- offline ---------------------------------------------------------------------------------


def _offline_scenario(a: Device, b: Device, server: ServerProc, watches: Watches,
                      while_offline: Callable[[], None]) -> None:
    """Edits on two devices while the server is down; everything converges once it is back."""
    for d in (a, b):
        watches.start(d)
    start = {f"{n}.txt": f"{n} v1\n".encode() for n in ("keep", "edit-a", "edit-b", "del-a", "ren-b", "both")}
    for name, data in start.items():
        a.write(name, data)
    converge(watches, [a, b], start, what="the starting files")

    server.kill()  # SIGKILL: the server vanishes mid-conversation
    a.write("edit-a.txt", "edit-a v2 (offline on laptop)\n")
    a.write("new-a/inner/file.txt", "new on laptop\n")
    (a.root / "del-a.txt").unlink()
    b.write("edit-b.txt", "edit-b v2 (offline on desk)\n")
    (b.root / "moved").mkdir()
    os.rename(b.root / "ren-b.txt", b.root / "moved/ren-b.txt")
    b.write("new-b.txt", "new on desk\n")
    a.write("both.txt", "both: laptop's offline edit\n")
    b.write("both.txt", "both: desk's offline edit, longer\n")
    while_offline()
    server.start()

    expected = {
        "keep.txt": b"keep v1\n", "edit-a.txt": b"edit-a v2 (offline on laptop)\n",
        "edit-b.txt": b"edit-b v2 (offline on desk)\n", "new-a": DIR, "new-a/inner": DIR,
        "new-a/inner/file.txt": b"new on laptop\n", "moved": DIR, "moved/ren-b.txt": b"ren-b v1\n",
        "new-b.txt": b"new on desk\n",
    }
    pattern = re.compile(rf"^both \(conflicted copy from (laptop|desk) {STAMP}\)\.txt$")

    def settled() -> Snapshot | None:
        snap = snapshot(a.root)
        if snap is None or snap != snapshot(b.root) or temps(a.root) or temps(b.root):
            return None
        rest = {p: v for p, v in snap.items() if p != "both.txt" and not pattern.match(p)}
        copies = [p for p in snap if pattern.match(p)]
        return snap if rest == expected and len(copies) == 1 and "both.txt" in snap else None

    snap = wait_for(watches, settled, "offline edits of two devices to converge", timeout=60)
    copy = next(p for p in snap if pattern.match(p))
    assert {snap["both.txt"], snap[copy]} == {b"both: laptop's offline edit\n", b"both: desk's offline edit, longer\n"}
    assert set(server_tree(a)) == set(snap)
    for w in watches.started:
        assert w.alive(), w.report()


def test_server_down_during_edits_on_two_devices(
        two_devices: tuple[Device, Device], server: ServerProc, watches: Watches) -> None:
    a, b = two_devices

    def until_noticed() -> None:
        # Keep the server down until both watches have noticed: their long-poll connections broke.
        wait_for(watches, lambda: not any(connected(w, server) for w in watches.started),
                 "both watches to lose their connections")

    _offline_scenario(a, b, server, watches, until_noticed)


@pytest.mark.slow
def test_server_down_long_enough_to_report_offline(
        two_devices: tuple[Device, Device], server: ServerProc, watches: Watches) -> None:
    """The server stays down until every watch says it is offline; then everything still converges."""
    a, b = two_devices

    def until_offline() -> None:
        wait_for(watches, lambda: all("offline" in w.log_text() for w in watches.started),
                 "every watch to report it is offline", timeout=90)

    _offline_scenario(a, b, server, watches, until_offline)
    wait_for(watches, lambda: all("back online" in w.log_text() for w in watches.started),
             "every watch to report it is back online", timeout=30)


# --- files being written, and signals --------------------------------------------------------


def test_large_file_written_slowly_is_never_committed_half_written(
        two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    for d in (a, b):
        watches.start(d)
    a.write("ready.txt", "go")
    converge(watches, [a, b], what="both watches to be live")

    pieces = [random_bytes(512 * 1024, 100 + i) for i in range(10)]
    full = b"".join(pieces)
    # Written in ten pieces over about five seconds, the file staying open: each pause is longer
    # than watch's debounce, so only the open file tells watch the file is not done yet.
    with open(a.root / "video.bin", "wb") as f:
        for i, piece in enumerate(pieces):
            f.write(piece)
            f.flush()
            os.fsync(f.fileno())
            deadline = time.monotonic() + 0.5
            # Between pieces, B must never see a partial file (a pull writes temp then renames).
            while time.monotonic() < deadline:
                on_b = b.root / "video.bin"
                if on_b.exists():
                    assert on_b.stat().st_size in (0, len(full)), f"half-written file on desk after piece {i}"
                time.sleep(0.02)

    converge(watches, [a, b], {"ready.txt": b"go", "video.bin": full}, what="the whole file on desk")
    revs = [r for r in revisions(a, "video.bin") if r["op"] == "put"]
    assert revs, "video.bin was never committed"
    assert [r["size"] for r in revs] == [len(full)] * len(revs), revs


@pytest.mark.slow
def test_file_created_then_written_after_a_pause_is_not_committed_empty(
        two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    for d in (a, b):
        watches.start(d)
    a.write("ready.txt", "go")
    converge(watches, [a, b], what="both watches to be live")
    full = random_bytes(1 << 20, 3)
    with open(a.root / "download.part", "wb") as f:
        # A downloader that creates its file, then waits for the network before the first byte.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            time.sleep(0.05)
        f.write(full)
    converge(watches, [a, b], {"ready.txt": b"go", "download.part": full}, what="the whole file on desk")
    sizes = [r["size"] for r in revisions(a, "download.part") if r["op"] == "put"]
    assert sizes == [len(full)], sizes


class SignalOnTempWrite(FileSystemEventHandler):
    """Sends a signal to a watch the moment a transfer writes data into a temp file."""

    def __init__(self, watch: Watch, target: Path, sig: int = signal.SIGTERM) -> None:
        self.watch, self.target, self.sig = watch, target, sig
        self.fired = threading.Event()
        self.target_existed = False

    def on_any_event(self, event: FileSystemEvent) -> None:
        name = os.path.basename(os.fsdecode(event.src_path))
        if self.fired.is_set() or not name.startswith(TEMP_PREFIX) or not isinstance(event, FileModifiedEvent):
            return
        self.target_existed = self.target.exists()
        self.watch.send(self.sig)
        self.fired.set()


def test_sigterm_during_download_leaves_no_half_file(two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    wb = watches.start(b)
    b.write("ready.txt", "go")
    wait_for(watches, lambda: "pushed" in wb.log_text(), "desk's first push")
    data = random_bytes(32 << 20, 7)
    a.write("big.bin", data)
    trigger = SignalOnTempWrite(wb, b.root / "big.bin")
    observer = Observer()
    observer.schedule(trigger, str(b.root), recursive=False)
    observer.start()
    try:
        a.run("push", "-q")
        # SIGTERM reaches desk's watch while it writes the first downloaded bytes into its temp file.
        wait_for(watches, trigger.fired.is_set, "desk to start writing big.bin", timeout=60)
        code = wb.proc.wait(timeout=45)
    finally:
        observer.stop()
        observer.join(timeout=10)
    assert code == 0, wb.report()
    assert not trigger.target_existed
    # Finished or abandoned, never half: the file is whole or absent (a temp may wait for the next pull).
    if (b.root / "big.bin").exists():
        assert b.read("big.bin") == data
        assert temps(b.root) == [], wb.report()
    # The index agrees with the disk: a pull completes it, and nothing looks changed locally.
    b.run("pull", "-q")
    assert b.read("big.bin") == data
    st = status(b)
    assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), st
    assert temps(b.root) == []


def test_sigterm_during_upload_leaves_no_half_commit(
        two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    wa = watches.start(a)
    a.write("ready.txt", "go")
    wait_for(watches, lambda: "pushed" in wa.log_text(), "laptop's first push")
    reader = psutil.Process(wa.proc.pid)
    before = reader.io_counters().read_chars
    data = random_bytes(32 << 20, 8)
    a.write("big.bin", data)
    # Stop the watch while it is reading the file to upload it (a quarter of it read).
    wait_for(watches, lambda: reader.io_counters().read_chars - before > len(data) // 4,
             "laptop's watch to be reading big.bin", interval=0.005)
    code = wa.stop(signal.SIGTERM)
    assert code == 0, wa.report()

    # The push in progress was finished, or abandoned before its commit: never half of it.
    revs = revisions(b, "big.bin")
    assert len(revs) <= 1 and all(r["size"] == len(data) for r in revs), revs
    # Whatever was cut off, a new watch finishes it, and the other device gets the whole file.
    watches.start(a)
    watches.start(b)
    converge(watches, [a, b], {"ready.txt": b"go", "big.bin": data}, timeout=60, what="big.bin on desk")
    revs = revisions(b, "big.bin")
    assert [r["size"] for r in revs] == [len(data)], revs


@pytest.mark.slow
def test_sigint_and_sigterm_stop_an_idle_watch_with_code_0(
        two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    wa, wb = watches.start(a), watches.start(b)
    a.write("x.txt", "x")
    converge(watches, [a, b], what="x.txt")
    started = time.monotonic()
    assert wa.stop(signal.SIGINT, timeout=15) == 0, wa.report()
    assert wb.stop(signal.SIGTERM, timeout=15) == 0, wb.report()
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_sigterm_while_offline_exits_promptly(
        two_devices: tuple[Device, Device], server: ServerProc, watches: Watches) -> None:
    a, _ = two_devices
    wa = watches.start(a)
    a.write("x.txt", "x")
    wait_for(watches, lambda: "pushed" in wa.log_text(), "laptop's first push")
    server.kill()
    a.write("y.txt", "made offline")
    wait_for(watches, lambda: not connected(wa, server), "laptop's watch to lose its connection")
    started = time.monotonic()
    assert wa.stop(signal.SIGTERM, timeout=60) == 0, wa.report()
    took = time.monotonic() - started
    assert took < 5, f"watch took {took:.1f}s to stop after SIGTERM while offline"


# --- devices ---------------------------------------------------------------------------------


def test_devices_lists_name_kind_last_seen_and_behind(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("one.txt", "1")
    a.write("two.txt", "2")
    a.run("push", "-q")

    listed = {d["name"]: d for d in a.run("devices", "--json").json()["devices"]}
    assert {"laptop", "desk"} <= set(listed)
    laptop, desk = listed["laptop"], listed["desk"]
    assert laptop["kind"] == desk["kind"] == "desktop"
    assert laptop["current"] and not desk["current"]
    assert not laptop["revoked"] and not desk["revoked"]
    for d in (laptop, desk):
        assert d["last_seen"] is not None and abs(time.time() - d["last_seen"]) < 300, d
    assert laptop["behind"] == 0
    assert desk["behind"] == 2  # two changes pushed since desk cloned

    b.run("pull", "-q")
    listed = {d["name"]: d for d in a.run("devices", "--json").json()["devices"]}
    assert listed["desk"]["behind"] == 0

    text = a.run("devices").out
    header, *rows = [line for line in text.splitlines() if line.strip()]
    for column in ("name", "kind", "last seen", "behind"):
        assert column in header
    laptop_row = next(r for r in rows if " laptop " in f" {r} ")
    assert "desktop" in laptop_row and "this device" in laptop_row
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", laptop_row)
    assert any(" desk " in f" {r} " for r in rows)


def test_revoked_device_gets_exit_3_and_others_keep_working(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("x.txt", "x")
    a.run("push", "-q")
    answer = a.run("devices", "revoke", "desk", "--json").json()
    assert answer["name"] == "desk" and answer["revoked"] is True

    for args in (("status",), ("pull",), ("push",), ("ls", "--remote")):
        res = b.run(*args, check=False)
        assert res.code == 3, (args, res)
        assert "revoked" in one_line_error(res) or "token" in res.err
    listed = {d["name"]: d for d in a.run("devices", "--json").json()["devices"]}
    assert listed["desk"]["revoked"] is True
    a.write("y.txt", "y")
    a.run("push", "-q")  # the other device is untouched
    # Revoking it again, or a device that does not exist, is a clear error.
    again = a.run("devices", "revoke", "desk", check=False)
    assert again.code == 7 and "no active device" in one_line_error(again)
    nobody = a.run("devices", "revoke", "no-such-device", check=False)
    assert nobody.code == 7


@pytest.mark.slow
def test_revoked_device_watch_exits_3(two_devices: tuple[Device, Device], watches: Watches) -> None:
    a, b = two_devices
    wb = watches.start(b)
    a.write("x.txt", "x")
    a.run("push", "-q")
    wait_for(watches, lambda: (b.root / "x.txt").exists(), "desk's watch to pull x.txt")
    a.run("devices", "revoke", "desk", "-q")
    a.write("secret.txt", "after the revocation")
    a.run("push", "-q")
    wb.expected_exit = True
    wait_for(watches, lambda: not wb.alive(), "the revoked watch to stop", timeout=30)
    assert wb.proc.returncode == 3, wb.report()
    assert not (b.root / "secret.txt").exists()
    assert "error" in wb.log_text() or "error" in wb.stderr_text()


@pytest.mark.slow
def test_revoked_machine_cannot_get_back_in_with_its_stored_login(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    a.write("secret.txt", "for trusted devices only")
    a.run("push", "-q")
    a.run("devices", "revoke", "desk", "-q")
    # The lost machine (desk's config folder, nothing typed again) tries to get back in.
    again = b.run("clone", b.server.url, "docs", str(b.root.parent / "desk-again"), "--device", "desk-again",
                  cwd=b.config, check=False)
    assert again.code == 3, again
    assert not (b.root.parent / "desk-again" / "secret.txt").exists()


# --- selective sync --------------------------------------------------------------------------


@pytest.fixture
def box_with_folders(make_device: Any) -> Device:
    a = make_device("laptop")
    a.root.mkdir()
    a.run("init", str(a.root), "--server", a.server.url, "--box", "docs", "--device", "laptop")
    for rel, data in {"docs/a.txt": "a", "docs/sub/b.txt": "b", "photos/p1.jpg": "p1", "photos/p2.jpg": "p2",
                      "music/m.mp3": "m", "top.txt": "top"}.items():
        a.write(rel, data)
    a.run("push", "-q")
    return a


def clone_only(make_device: Any, *only: str) -> Device:
    c = make_device("phone")
    c.run("clone", c.server.url, "docs", str(c.root), "--device", "phone", "--only", *only, cwd=c.config)
    return c


def test_clone_only_ls_remote_and_pull_on_demand(box_with_folders: Device, make_device: Any) -> None:
    c = clone_only(make_device, "docs", "photos/p1.jpg")
    assert set(c.files()) == {"docs/a.txt", "docs/sub/b.txt", "photos/p1.jpg"}
    st = status(c)  # what is not selected is not "deleted"
    assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), st

    # ls --remote lists the whole box without downloading it.
    listed = {e["path"]: e for e in c.run("ls", "--remote", "--json").json()["entries"]}
    assert {"docs/a.txt", "photos/p2.jpg", "music/m.mp3", "top.txt"} <= set(listed)
    assert listed["music/m.mp3"]["kind"] == "file" and listed["music/m.mp3"]["size"] == 1
    assert not (c.root / "music").exists()
    under = c.run("ls", "--remote", "photos", "--json").json()["entries"]
    assert {e["path"] for e in under if e["kind"] == "file"} == {"photos/p1.jpg", "photos/p2.jpg"}
    text = c.run("ls", "--remote").out
    assert "music/m.mp3" in text and "top.txt" in text

    # pull PATH fetches on demand, and that path stays selected.
    pulled = c.run("pull", "music", "--json").json()
    assert "music/m.mp3" in pulled["written"]
    assert c.read("music/m.mp3") == b"m"
    c.run("pull", "top.txt", "-q")
    assert set(c.files()) == {"docs/a.txt", "docs/sub/b.txt", "photos/p1.jpg", "music/m.mp3", "top.txt"}
    box_with_folders.write("music/m2.mp3", "m2")
    box_with_folders.write("photos/p3.jpg", "p3")
    box_with_folders.run("push", "-q")
    c.run("pull", "-q")
    assert c.read("music/m2.mp3") == b"m2"
    assert not (c.root / "photos/p3.jpg").exists()
    st = status(c)
    assert (st["added"], st["modified"], st["deleted"], st["remote_waiting"]) == ([], [], [], 0), st
    # A bad path is a one-line error.
    bad = c.run("pull", "../outside", check=False)
    assert bad.code == 2 and one_line_error(bad)


def test_watch_keeps_only_selected_paths_in_sync(
        box_with_folders: Device, make_device: Any, watches: Watches) -> None:
    a = box_with_folders
    c = clone_only(make_device, "docs", "photos/p1.jpg")
    watches.start(a)
    watches.start(c)
    # Remote changes: only those inside the selection arrive.
    a.write("docs/a.txt", "a v2")
    a.write("docs/new/n.txt", "new in docs")
    a.write("photos/p1.jpg", "p1 v2")
    a.write("photos/p2.jpg", "p2 v2")
    a.write("music/m.mp3", "m v2")
    a.write("other/o.txt", "o")
    # Local changes on the selective device sync back.
    c.write("docs/from-phone.txt", "hi")
    wait_for(watches, lambda: (a.root / "docs/from-phone.txt").exists() and a.read("docs/from-phone.txt") == b"hi",
             "phone's file on laptop")

    def caught_up() -> bool:
        files = snapshot(c.root) or {}
        return (files.get("docs/a.txt") == b"a v2" and files.get("docs/new/n.txt") == b"new in docs"
                and files.get("photos/p1.jpg") == b"p1 v2" and status(c)["remote_waiting"] == 0)

    wait_for(watches, caught_up, "phone to catch up with the selected paths", timeout=45)
    assert set(c.files()) == {"docs/a.txt", "docs/sub/b.txt", "docs/new/n.txt", "docs/from-phone.txt",
                              "photos/p1.jpg"}
    # Deleting a selected file on the phone deletes it everywhere; unselected files stay on the server.
    (c.root / "docs/sub/b.txt").unlink()
    wait_for(watches, lambda: not (a.root / "docs/sub/b.txt").exists(), "the delete to reach laptop")
    remote = server_tree(a)
    assert {"photos/p2.jpg", "music/m.mp3", "other/o.txt", "top.txt"} <= set(remote)
    assert "docs/sub/b.txt" not in remote


@pytest.mark.slow
def test_new_file_outside_the_selection_is_not_silently_dropped(
        box_with_folders: Device, make_device: Any) -> None:
    """A file the user creates outside the selection is their edit: it syncs, as Dropbox syncs a new folder."""
    a = box_with_folders
    c = clone_only(make_device, "docs")
    c.write("notes/idea.txt", "made on the phone")
    assert "notes/idea.txt" in status(c)["added"]
    c.run("push", "-q")
    assert "notes/idea.txt" in server_tree(a)


# --- long polling, against the HTTP API ------------------------------------------------------


class Api:
    """Direct HTTP calls with one bearer token."""

    def __init__(self, url: str, token: str) -> None:
        self.base = f"{url}/v1"
        self.token = token
        self.session = self.new_session()

    def new_session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def head(self, box: int) -> int:
        answer = self.session.get(f"{self.base}/boxes/{box}/pending", params={"cursor": 0}, timeout=10)
        return int(answer.json()["head"])

    def wait(self, box: int, cursor: int, timeout: float, session: requests.Session | None = None
             ) -> tuple[float, requests.Response]:
        started = time.monotonic()
        answer = (session or self.session).get(f"{self.base}/boxes/{box}/wait",
                                               params={"cursor": cursor, "timeout": timeout}, timeout=timeout + 30)
        return time.monotonic() - started, answer

    def commit_folder(self, box: int, path: str) -> int:
        """A tiny commit (a new folder) straight through the API."""
        answer = self.session.post(f"{self.base}/boxes/{box}/commits", json={
            "message": "api", "changes": [{"path": path, "op": "put", "kind": "dir", "parent_rev": 0}]}, timeout=10)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["seq"])


@dataclass
class PollSetup:
    server: ServerProc
    waiter: Api  # the user's first token
    writer: Api  # another client: a device token of the same user
    box: int
    other_box: int


@pytest.fixture(scope="module")
def poll_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PollSetup]:
    """One server for every long-poll test: user alice, boxes 'docs' and 'other', and a second client."""
    srv = ServerProc(tmp_path_factory.mktemp("longpoll") / "server-data", free_port())
    srv.start()
    try:
        waiter = Api(srv.url, srv.add_user("alice"))
        device = waiter.session.post(f"{waiter.base}/devices", json={"name": "writer"}, timeout=10).json()
        writer = Api(srv.url, device["token"])
        box = int(waiter.session.post(f"{waiter.base}/boxes", json={"name": "docs"}, timeout=10).json()["id"])
        other = int(waiter.session.post(f"{waiter.base}/boxes", json={"name": "other"}, timeout=10).json()["id"])
        writer.commit_folder(box, "first")
        yield PollSetup(srv, waiter, writer, box, other)
    finally:
        srv.kill()


def _wait_in_thread(api: Api, box: int, cursor: int, timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    got: dict[str, Any] = {}

    def run() -> None:
        elapsed, answer = api.wait(box, cursor, timeout, api.new_session())
        got.update(elapsed=elapsed, answer=answer, at=time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def _connections(server: ServerProc) -> int:
    """How many TCP connections the server process holds open on its port."""
    conns = psutil.Process(server.proc.pid).net_connections(kind="tcp")  # type: ignore[union-attr]
    return sum(1 for c in conns if c.laddr.port == server.port and c.status == psutil.CONN_ESTABLISHED)


def _settle(threads: list[threading.Thread], server: ServerProc, count: int) -> None:
    """Wait until `count` more long polls are connected to the server, and none has answered yet."""
    wait_until(lambda: _connections(server) >= count, timeout=20, what=f"{count} connections")
    assert all(t.is_alive() for t in threads), "a long poll answered before any commit"


def test_long_poll_wakes_soon_after_a_commit_by_another_client(poll_setup: PollSetup) -> None:
    p = poll_setup
    head = p.waiter.head(p.box)
    base = _connections(p.server)
    thread, got = _wait_in_thread(p.waiter, p.box, head, timeout=20)
    _settle([thread], p.server, base + 1)
    p.writer.commit_folder(p.box, f"wake-{head}")
    committed = time.monotonic()
    thread.join(timeout=25)
    assert not thread.is_alive()
    body = got["answer"].json()
    assert got["answer"].status_code == 200 and body["changes"] is True and body["head"] > head, body
    assert got["at"] - committed < 2.0, f"woke {got['at'] - committed:.2f}s after the commit"
    assert got["elapsed"] < 10, "the long poll ran to (near) its timeout instead of waking"


def test_long_poll_answers_at_the_timeout_without_changes(poll_setup: PollSetup) -> None:
    p = poll_setup
    head = p.waiter.head(p.box)
    elapsed, answer = p.waiter.wait(p.box, head, 1.5)
    body = answer.json()
    assert answer.status_code == 200 and body["changes"] is False and "backoff" in body, body
    assert body["head"] == head
    assert 1.4 <= elapsed < 5, elapsed
    # Behind the head, it answers at once.
    elapsed, answer = p.waiter.wait(p.box, head - 1, 20)
    assert answer.json()["changes"] is True and elapsed < 3, elapsed


def test_long_poll_is_not_woken_by_another_box(poll_setup: PollSetup) -> None:
    p = poll_setup
    head = p.waiter.head(p.box)
    base = _connections(p.server)
    thread, got = _wait_in_thread(p.waiter, p.box, head, timeout=2.5)
    _settle([thread], p.server, base + 1)
    p.writer.commit_folder(p.other_box, f"elsewhere-{time.monotonic_ns()}")
    thread.join(timeout=20)
    assert got["answer"].json()["changes"] is False
    assert got["elapsed"] >= 2.3


def test_long_poll_many_waiters_all_wake_on_one_commit(poll_setup: PollSetup) -> None:
    p = poll_setup
    head = p.waiter.head(p.box)
    base = _connections(p.server)
    waiters = [_wait_in_thread(p.waiter, p.box, head, timeout=30) for _ in range(50)]
    _settle([t for t, _ in waiters], p.server, base + 50)
    p.writer.commit_folder(p.box, f"wake-all-{head}")
    committed = time.monotonic()
    for t, _ in waiters:
        t.join(timeout=25)
    assert all(not t.is_alive() for t, _ in waiters)
    assert all(g["answer"].json()["changes"] is True for _, g in waiters)
    slowest = max(g["at"] for _, g in waiters) - committed
    assert slowest < 3.0, f"the last of 50 waiters woke {slowest:.2f}s after the commit"


def test_long_poll_validation(poll_setup: PollSetup) -> None:
    p = poll_setup
    url = f"{p.waiter.base}/boxes/{p.box}/wait"
    too_long = p.waiter.session.get(url, params={"cursor": 0, "timeout": 100_000}, timeout=10)
    assert too_long.status_code == 422 and "message" in too_long.json()
    negative = p.waiter.session.get(url, params={"cursor": -1, "timeout": 1}, timeout=10)
    assert negative.status_code == 422
    anonymous = requests.get(url, params={"cursor": 0, "timeout": 1}, timeout=10)
    assert anonymous.status_code == 401
    stranger = Api(p.server.url, p.server.tokens.get("mallory") or p.server.add_user("mallory"))
    refused = stranger.session.get(url, params={"cursor": 0, "timeout": 1}, timeout=10)
    assert refused.status_code in (403, 404), refused.text
