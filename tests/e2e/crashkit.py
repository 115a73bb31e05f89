"""Tools for the crash tests: kill points, a proxy that loses a commit's answer, and the checks run after each kill."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import BOXCTL, Device, wait_until

TEMP_PREFIX = ".box-tmp-"
REFUSED = 4  # boxctl's exit code when the server refuses a push (another device moved on)


def crash_count(default: int) -> int:
    """How many kill points of each kind to run: BOX_CRASH_POINTS scales the set (`make test-crash`)."""
    return int(os.environ.get("BOX_CRASH_POINTS", default))


def start(device: Device, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
          ) -> subprocess.Popen[str]:
    """Start `boxctl ARGS` for `device` (with `env` added to its environment) without waiting for it."""
    return subprocess.Popen([*BOXCTL, *args], cwd=cwd or device.root, env=device.env() | (env or {}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_at(proc: subprocess.Popen[str], rng: random.Random, longest: float,
            event: Callable[[], bool] | None = None, during: subprocess.Popen[str] | None = None) -> str:
    """SIGKILL-point for `proc`: after `event` (if any) happened, then a random delay up to `longest` seconds.

    Returns what happened: 'killed', or 'finished' when the process ended before its kill point, or when
    `during` (the operation the kill is meant to interrupt, if not `proc` itself: a push while the server
    is killed) did; then nothing is killed.
    """
    watched = during or proc

    def over() -> bool:
        return proc.poll() is not None or watched.poll() is not None

    if event is not None:
        wait_until(lambda: event() or over(), timeout=120, interval=0.002, what="the kill event")
    deadline = time.monotonic() + rng.uniform(0, longest)
    while not over() and time.monotonic() < deadline:
        time.sleep(0.002)
    if over():
        return "finished"
    proc.kill()
    proc.wait(timeout=30)
    return "killed"


# At least this share of the scheduled kill points must really kill (the rest: the process ended first), so
# that the count of kill points a run claims is the count of SIGKILLs it sent. Checked once a test has
# scheduled MIN_POINTS points; fewer (the small set of `make test`) vary too much by luck. Pulls and clones
# of small folders often end before a late point (59-92% land, by run), pushes 79-100%.
MIN_KILLED = 0.5
MIN_POINTS = 6


def lost_versions(device: Device, expected: dict[int, dict[str, bytes]], tmp: Path) -> list[int]:
    """The versions of `expected` that do not restore byte for byte (a restore failing counts as lost)."""
    from tests.e2e.helpers import tree_bytes

    lost = []
    for seq, files in expected.items():
        dest = tmp / f"restore-{seq}"
        result = device.run("restore", ".", "--rev", str(seq), "--to", str(dest), check=False)
        if result.code != 0 or tree_bytes(dest) != files:
            lost.append(seq)
    return lost


def summary_line(kind: str, scheduled: int, killed: int, versions: int, lost: int, half: int, temps: int,
                 refused: int) -> str:
    """One line that a note can quote: what a crash test did and found."""
    share = f"{killed / scheduled:.0%}" if scheduled else "-"
    return (f"crash {kind}: {killed} of {scheduled} kill points killed ({share}), {versions} versions checked, "
            f"{lost} lost, {half} half-written files, {temps} temp files left, {refused} reruns refused")


def reap(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    """Wait for `proc` (killing it past `timeout`): its exit code, stdout and stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def temp_files(root: Path) -> list[str]:
    """Temp files a write left behind under `root` (a pull's or clone's `.box-tmp-*`)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"{TEMP_PREFIX}*"))


def half_written(files: dict[str, bytes], known: dict[str, set[bytes]]) -> list[str]:
    """Paths whose bytes are none of the versions the test ever gave them: a half-written file."""
    return [p for p, data in files.items() if not p.split("/")[-1].startswith(TEMP_PREFIX)
            and "conflicted copy" not in p and data not in known.get(p, set())]


def remember(known: dict[str, set[bytes]], files: dict[str, bytes]) -> None:
    """Add every (path, bytes) of a version to `known`."""
    for path, data in files.items():
        known.setdefault(path, set()).add(data)


class AnswerLoser:
    """A loopback TCP proxy that forwards everything, but never delivers the answer to a commit.

    The commit reaches the server and lands; the client waits for an answer that never comes, which
    is the moment a SIGKILL (or a power cut) leaves a commit on the server that the client never
    recorded. `lost` is set once an answer was swallowed. It swallows only while `armed` is True.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lost = threading.Event()
        self.armed = False  # True: the next commits' answers are lost
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                state = {"commit": False}
                threading.Thread(target=self._pipe, args=(client, server, state, True), daemon=True).start()
                threading.Thread(target=self._pipe, args=(server, client, state, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, state: dict[str, bool], up: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                if up and self.armed and data.startswith(b"POST ") and b"/commits HTTP/" in data.split(b"\r\n", 1)[0]:
                    state["commit"] = True
                if not up and state["commit"]:
                    self.lost.set()
                    continue  # swallowed: the client never hears that its commit landed
                dst.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()
