"""One model run's world: a fresh box on the shared server and three device folders driven by `boxctl`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import BOXCTL, Device, ServerProc

TEMP_MARK = ".box-tmp-"
DEVICES = ("d0", "d1", "d2")


class BoxctlFailed(AssertionError):
    """A boxctl run that should have worked exited non-zero (or printed a traceback)."""


@dataclass
class Run:
    """What one boxctl invocation printed and returned."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class World:
    """Three devices (d0, d1, d2) syncing one box; `log` collects every step for the failure report."""

    server: ServerProc
    devices: list[Device]
    box: str
    log: list[str] = field(default_factory=list)
    calls: int = 0
    errors: list[str] = field(default_factory=list)  # sync commands that failed: the run goes on, then fails
    spent: float = 0.0  # seconds spent waiting for boxctl

    def note(self, line: str) -> None:
        self.log.append(line)

    def start(self, device: Device, *args: str) -> subprocess.Popen[str]:
        """Start `boxctl ARGS` in `device`'s folder without waiting for it."""
        self.calls += 1
        return subprocess.Popen([*BOXCTL, *args], cwd=device.root, env=device.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(self, device: Device, proc: subprocess.Popen[str], args: tuple[str, ...],
               check: bool = True, timeout: float = 60) -> Run:
        """Wait for a started boxctl; with `check`, a non-zero exit or a traceback fails the run."""
        started = time.monotonic()
        out, err = proc.communicate(timeout=timeout)
        self.spent += time.monotonic() - started
        run = Run(args, proc.returncode, out, err)
        if check:
            self.finish_check(device, run)
        return run

    def finish_check(self, device: Device, run: Run) -> None:
        """A non-zero exit or a traceback fails the model run."""
        if run.code != 0 or "Traceback" in run.err:
            raise BoxctlFailed(f"{device.name}: boxctl {' '.join(run.args)} exited {run.code}: "
                               f"{run.err.strip()[-2000:]}")

    def failed(self, device: Device, run: Run) -> str | None:
        """Record a sync command that failed (exit code, or a traceback) and say why; None if it worked.

        The run goes on after it, so one failure does not hide what else the run would find.
        """
        if run.code == 0 and "Traceback" not in run.err:
            return None
        lines = [line for line in run.err.strip().splitlines() if line.strip()] or [""]
        why = f"exit {run.code}: {lines[-1][:300]}"
        self.errors.append(f"step {len(self.log) + 1}, {device.name}: boxctl {' '.join(run.args)} -> {why}")
        return why

    def run(self, device: Device, *args: str, check: bool = True) -> Run:
        """Run `boxctl ARGS` on `device` and wait for it."""
        return self.finish(device, self.start(device, *args), args, check)

    def run_all(self, *args: str) -> list[Run]:
        """Run the same boxctl command on every device at once (two cores: start-up costs overlap)."""
        procs = [(d, self.start(d, *args)) for d in self.devices]
        return [self.finish(d, p, args) for d, p in procs]


CHUNKING = {"min": 256, "avg": 1024, "max": 4096}  # small blocks: the model's files span several


def make_world(server: ServerProc, configs: dict[str, Path], base: Path, box: str) -> World:
    """A fresh box `box` on `server` and three empty folders under `base` that `boxctl init` links to it.

    The box is made over HTTP first, so the three inits can run at once (start-up is most of their cost).
    """
    answer = requests.post(f"{server.url}/v1/boxes", json={"name": box, "chunking": CHUNKING}, timeout=30,
                           headers={"Authorization": f"Bearer {server.tokens['alice']}"})
    answer.raise_for_status()
    devices = [Device(name, base / name, configs[name], server) for name in DEVICES]
    world = World(server, devices, box)
    procs = []
    for d in devices:
        d.root.mkdir(parents=True)
        args = ("init", str(d.root), "--server", server.url, "--box", box, "--device", d.name)
        procs.append((d, args, world.start(d, *args)))
    for d, args, proc in procs:
        world.finish(d, proc, args)
    return world


Tree = dict[str, bytes | None]  # path -> file bytes, or None for a folder


def read_tree(root: Path) -> Tree:
    """Every file and folder under `root` except .box/ (temp files included: the check looks for them)."""
    found: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        if rel_dir == "":
            dirnames[:] = [n for n in dirnames if n != ".box"]
        for name in dirnames:
            found[f"{rel_dir}/{name}" if rel_dir else name] = None
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                found[rel] = (Path(dirpath) / name).read_bytes()
            except FileNotFoundError:
                continue  # removed by a pull running at the same time
    return found


def temp_files(tree: Tree) -> list[str]:
    """Paths of boxctl temp files in a tree."""
    return sorted(p for p in tree if p.rsplit("/", 1)[-1].startswith(TEMP_MARK))
