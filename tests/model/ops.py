"""The random operations of a model run and the model of every edit they made.

Every edit writes unique bytes that start with `e<id> `, so any copy of it (the file, a conflicted
copy, a pulled version) names the edit it came from. An edit stops being owed to the server only when
the simulated user destroys it (overwrites, deletes or replaces the file holding it) on a device: the
bytes are read from disk right before, so whatever a pull did meanwhile is what counts.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Device
from tests.model.world import TEMP_MARK, Run, World

OP_CLASSES = ("write", "delete", "mkdir", "rmdir", "rename", "typechange", "midpull", "concurrent",
              "offline", "sync", "reconflict")
WEIGHTS: dict[str, float] = {"write": 6, "delete": 2, "mkdir": 1, "rmdir": 1, "rename": 3, "typechange": 2,
                             "midpull": 1, "concurrent": 2, "offline": 1, "sync": 5, "reconflict": 0.5}
NAMES = ("a", "b", "c.txt")  # few names: paths collide often (renames onto deleted names, type changes)
EDIT_RE = re.compile(rb"^e(\d+) ")
SLOW_SIZE = 64 << 10  # a file a mid-pull edit races with, downloaded under --bwlimit
SLOW_RATE = "256K"


def op_classes(spec: str | None) -> list[str]:
    """The op classes a run uses: all by default; `-a,-b` leaves some out, `a,b` keeps only those."""
    if not spec:
        return list(OP_CLASSES)
    words = [w.strip() for w in spec.split(",") if w.strip()]
    unknown = [w.lstrip("-") for w in words if w.lstrip("-") not in OP_CLASSES]
    if unknown:
        raise ValueError(f"unknown op class(es) {unknown}; known: {', '.join(OP_CLASSES)}")
    if all(w.startswith("-") for w in words):
        return [c for c in OP_CLASSES if c not in {w[1:] for w in words}]
    return [w for w in words if not w.startswith("-")]


@dataclass
class Edit:
    """One write the simulated user made: where, on which device, and the exact bytes."""

    eid: int
    device: str
    path: str
    data: bytes


@dataclass
class Model:
    """The simulated users of one run: picks operations from a seeded RNG and applies them."""

    world: World
    rng: random.Random
    classes: list[str]
    edits: dict[int, Edit] = field(default_factory=dict)
    discarded: set[int] = field(default_factory=set)
    offline: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)

    # --- the disk of one device --------------------------------------------------------------

    def kind(self, dev: Device, path: str) -> str | None:
        full = dev.root / path
        if full.is_symlink() or not os.path.lexists(full):
            return None
        return "dir" if full.is_dir() else "file"

    def entries(self, dev: Device, kind: str) -> list[str]:
        """Sorted paths of every file (or folder) on `dev` (never .box/ or temp files)."""
        found = []
        for dirpath, dirnames, filenames in os.walk(dev.root):
            rel = os.path.relpath(dirpath, dev.root)
            rel = "" if rel == "." else rel
            dirnames[:] = sorted(n for n in dirnames if not (rel == "" and n == ".box"))
            for name in sorted(dirnames if kind == "dir" else filenames):
                if not name.startswith(TEMP_MARK):
                    found.append(f"{rel}/{name}" if rel else name)
        return sorted(found)

    def writable(self, dev: Device, path: str) -> bool:
        """A file can be written at `path`: no parent is a file and `path` is not a folder."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.kind(dev, "/".join(parts[:i])) == "file":
                return False
        return self.kind(dev, path) != "dir"

    def random_path(self) -> str:
        depth = self.rng.choice((1, 1, 2, 2, 3))
        return "/".join(self.rng.choice(NAMES) for _ in range(depth))

    def free_path(self, dev: Device, tries: int = 8) -> str | None:
        """A random absent path whose parents are folders or absent."""
        for _ in range(tries):
            path = self.random_path()
            if self.kind(dev, path) is None and self.writable(dev, path):
                return path
        return None

    # --- user actions ------------------------------------------------------------------------

    def destroy(self, dev: Device, path: str) -> None:
        """Remove a file or folder as the user would; the edits it held are no longer owed."""
        full = dev.root / path
        if self.kind(dev, path) == "dir":
            for dirpath, _, filenames in os.walk(full):
                for name in filenames:
                    self.forget(Path(dirpath) / name)
            shutil.rmtree(full)
        else:
            self.forget(full)
            full.unlink()
        self.deleted.setdefault(dev.name, []).append(path)

    def forget(self, full: Path) -> None:
        try:
            match = EDIT_RE.match(full.read_bytes()[:32])
        except (FileNotFoundError, IsADirectoryError):
            return
        if match:
            self.discarded.add(int(match.group(1)))

    def write(self, dev: Device, path: str, size: int | None = None) -> Edit:
        """Write new unique bytes at `path` on `dev` (overwriting a file there), creating parents."""
        eid = len(self.edits) + 1
        if size is None:
            size = self.rng.choice((0, 20, 300, 2000))
        data = f"e{eid} {dev.name}:{path}\n".encode() + self.rng.randbytes(size)
        full = dev.root / path
        if self.kind(dev, path) == "file":
            self.forget(full)
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
        edit = self.edits[eid] = Edit(eid, dev.name, path, data)
        return edit

    # --- the operations ----------------------------------------------------------------------

    def step(self) -> None:
        """Pick and apply one operation; log what it did."""
        for name, left in list(self.offline.items()):
            self.offline[name] = left - 1
            if left <= 1:
                del self.offline[name]
                self.world.note(f"  {name} back online")
        weights = [WEIGHTS[c] for c in self.classes]
        op = self.rng.choices(self.classes, weights)[0]
        dev = self.rng.choice(self.world.devices)
        line = getattr(self, f"op_{op}")(dev)
        self.world.note(line)

    def op_write(self, dev: Device) -> str:
        files = self.entries(dev, "file")
        path = self.rng.choice(files) if files and self.rng.random() < 0.6 else self.free_path(dev)
        if path is None:
            return f"{dev.name}: write (no free path)"
        edit = self.write(dev, path)
        return f"{dev.name}: write {path} e{edit.eid} ({len(edit.data)} B)"

    def op_delete(self, dev: Device) -> str:
        files = self.entries(dev, "file")
        if not files:
            return f"{dev.name}: delete (no file)"
        path = self.rng.choice(files)
        self.destroy(dev, path)
        return f"{dev.name}: delete {path}"

    def op_mkdir(self, dev: Device) -> str:
        path = self.free_path(dev)
        if path is None:
            return f"{dev.name}: mkdir (no free path)"
        (dev.root / path).mkdir(parents=True)
        return f"{dev.name}: mkdir {path}"

    def op_rmdir(self, dev: Device) -> str:
        dirs = self.entries(dev, "dir")
        if not dirs:
            return f"{dev.name}: rmdir (no folder)"
        path = self.rng.choice(dirs)
        self.destroy(dev, path)
        return f"{dev.name}: rm -r {path}"

    def op_rename(self, dev: Device) -> str:
        sources = self.entries(dev, "file") + self.entries(dev, "dir")
        if not sources:
            return f"{dev.name}: rename (nothing)"
        src = self.rng.choice(sources)
        gone = [p for p in self.deleted.get(dev.name, []) if self.kind(dev, p) is None and self.writable(dev, p)]
        dst = self.rng.choice(gone) if gone and self.rng.random() < 0.5 else self.free_path(dev)
        if dst is None or dst == src or dst.startswith(src + "/"):
            return f"{dev.name}: rename {src} (no destination)"
        (dev.root / dst).parent.mkdir(parents=True, exist_ok=True)
        os.rename(dev.root / src, dev.root / dst)
        self.deleted.setdefault(dev.name, []).append(src)
        return f"{dev.name}: mv {src} {dst}" + (" (a deleted name)" if dst in gone else "")

    def op_typechange(self, dev: Device) -> str:
        sources = self.entries(dev, "file") + self.entries(dev, "dir")
        if not sources:
            return f"{dev.name}: typechange (nothing)"
        path = self.rng.choice(sources)
        was = self.kind(dev, path)
        self.destroy(dev, path)
        if was == "file":
            (dev.root / path).mkdir()
            made = [self.write(dev, f"{path}/{name}") for name in self.rng.sample(NAMES, self.rng.randint(1, 2))]
            return f"{dev.name}: file {path} -> folder with " + ", ".join(f"{e.path} e{e.eid}" for e in made)
        edit = self.write(dev, path)
        return f"{dev.name}: folder {path} -> file e{edit.eid}"

    def op_concurrent(self, dev: Device) -> str:
        files = sorted({p for d in self.world.devices for p in self.entries(d, "file")})
        path = self.rng.choice(files) if files and self.rng.random() < 0.7 else self.random_path()
        others = [d for d in self.world.devices if d is not dev]
        chosen = [dev, *self.rng.sample(others, self.rng.randint(1, len(others)))]
        done = [f"{d.name} e{self.write(d, path).eid}" for d in chosen if self.writable(d, path)]
        return f"concurrent write {path}: " + (", ".join(done) or "nowhere writable")

    def op_reconflict(self, dev: Device) -> str:
        """The same path conflicts twice on `dev` within about a second: two conflicted copies, same stamp."""
        peers = [d for d in self.online() if d is not dev]
        if not peers or dev.name in self.offline:
            return f"{dev.name}: reconflict (no peer online)"
        peer = self.rng.choice(peers)
        path = self.free_path(peer) or self.random_path()
        if not (self.writable(peer, path) and self.writable(dev, path)):
            return f"{dev.name}: reconflict {path} (not writable)"
        lines = []
        for _ in range(2):
            mine, theirs = self.write(dev, path), self.write(peer, path)
            pushed = outcome(self.world, peer, "sync", self.world.run(peer, "sync", "--json", check=False))
            pulled = outcome(self.world, dev, "pull", self.world.run(dev, "pull", "--json", check=False))
            lines.append(f"{dev.name} e{mine.eid}, {peer.name} e{theirs.eid} sync{pushed}, {dev.name} pull{pulled}")
            if not self.writable(dev, path):
                break
        return f"reconflict {path}: " + "; ".join(lines)

    def op_offline(self, dev: Device) -> str:
        steps = self.rng.randint(3, 8)
        self.offline[dev.name] = steps
        return f"{dev.name}: offline for {steps} steps"

    def online(self) -> list[Device]:
        return [d for d in self.world.devices if d.name not in self.offline]

    def op_sync(self, dev: Device) -> str:
        devices = self.online()
        if not devices:
            return "sync (every device offline)"
        dev = self.rng.choice(devices)
        command = self.rng.choice(("sync", "sync", "push", "pull"))
        run = self.world.run(dev, command, "--json", check=False)
        if command == "push" and run.code == 4:
            return f"{dev.name}: push -> refused, pull first (exit 4)"
        return f"{dev.name}: {command}" + outcome(self.world, dev, command, run)

    def op_midpull(self, dev: Device) -> str:
        """Another device pushes a slow file (and maybe changes one `dev` holds); `dev` edits during its pull."""
        others = [d for d in self.online() if d is not dev]
        if not others or dev.name in self.offline:
            return f"{dev.name}: midpull (no peer online)"
        peer = self.rng.choice(others)
        slow = self.free_path(peer) or "slow"
        if not self.writable(peer, slow):
            return f"{dev.name}: midpull (no path for the slow file)"
        big = self.write(peer, slow, SLOW_SIZE)
        shared = [p for p in self.entries(peer, "file") if p != slow and self.kind(dev, p) == "file"]
        touched = ""
        if shared and self.rng.random() < 0.7:
            other = self.rng.choice(shared)
            if self.rng.random() < 0.5:
                self.destroy(peer, other)
                touched = f", deletes {other}"
            else:
                touched = f", writes {other} e{self.write(peer, other).eid}"
        peer_sync = outcome(self.world, peer, "sync", self.world.run(peer, "sync", "--json", check=False))
        target = self.rng.choice([p for p in (slow, *shared, *self.entries(dev, "file")) if self.writable(dev, p)]
                                 or [slow])
        when = self.rng.choice(("temp", "delay"))
        delay = self.rng.uniform(0.0, 0.4)
        proc = self.world.start(dev, "pull", "--json", "--bwlimit", SLOW_RATE)
        seen = wait_for_temp(dev.root, proc, 3.0) if when == "temp" else sleep_while(proc, delay)
        edit = self.write(dev, target) if self.writable(dev, target) else None
        run = self.world.finish(dev, proc, ("pull", "--json", "--bwlimit", SLOW_RATE), check=False)
        moment = f"at temp file ({'seen' if seen else 'pull ended first'})" if when == "temp" else f"after {delay:.2f}s"
        what = f"writes {target} e{edit.eid}" if edit else f"cannot write {target}"
        return (f"{peer.name}: write {slow} e{big.eid} ({SLOW_SIZE} B){touched}, sync{peer_sync}; "
                f"{dev.name}: pull --bwlimit {SLOW_RATE}, {what} {moment}" + outcome(self.world, dev, "pull", run))


def outcome(world: World, dev: Device, command: str, run: Run) -> str:
    """The log's account of a sync, push or pull: what it did, or how it failed (recorded as an error)."""
    why = world.failed(dev, run)
    return f" [FAILED {why}]" if why else summary(command, run.json())


def summary(command: str, answer: dict) -> str:
    """A short account of a sync/push/pull's --json answer for the operation log."""
    pull = answer.get("pull") if command == "sync" else answer if command == "pull" else None
    push = answer.get("push") if command == "sync" else answer if command == "push" else None
    parts = []
    if pull:
        for key in ("written", "deleted", "kept"):
            if pull.get(key):
                parts.append(f"{key} {','.join(pull[key])}")
        parts += [f"conflict {c['path']} -> {c['copy']!r}" for c in pull.get("conflicts", [])]
    if push and push.get("seq"):
        changed = [f"{k[0]}:{p}" for k in ("added", "modified", "deleted") for p in push.get(k, [])]
        parts.append(f"pushed #{push['seq']} {' '.join(changed)}")
    return f" [{'; '.join(parts)}]" if parts else " [nothing]"


def wait_for_temp(root: Path, proc: subprocess.Popen[str], timeout: float) -> bool:
    """Wait until a boxctl temp file appears anywhere under `root` (True), or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        for _, _, filenames in os.walk(root):
            if any(n.startswith(TEMP_MARK) for n in filenames):
                return True
        time.sleep(0.002)
    return False


def sleep_while(proc: subprocess.Popen[str], seconds: float) -> bool:
    """Wait `seconds` or until the process ends, whichever is first; True if it still runs."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        return True
