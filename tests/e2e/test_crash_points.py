"""Many SIGKILL points: the server during pushes (small and staged ones of 10,000+ files), the client during
push, pull and clone. Each point is chosen by an event (the push's commit in flight) or a random delay from
a seeded RNG, bounded by how long the operation takes.

After each kill and rerun: the rerun exits 0 (never 4, refused), every version a push reported restores
byte for byte, no device folder holds a half-written file, no local edit is lost, and no `.box-tmp-*`
is left. BOX_CRASH_POINTS sets the kill points per kind (`make test-crash`: 32, 144 scheduled, over 100 landing);
`make test` runs 2 of each kind but the staged one. A kill point is scheduled, and counted killed only
if the process was still running at that point; at least MIN_KILLED of the points must kill (from
MIN_POINTS points up). Each test ends with one summary line (printed, shown with -s, and in the run's
short summary and the junit properties as `crash_summary`): kills, versions lost, half-written files.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Device, ServerProc
from tests.e2e.crashkit import (
    MIN_KILLED,
    MIN_POINTS,
    REFUSED,
    crash_count,
    half_written,
    kill_at,
    lost_versions,
    reap,
    remember,
    start,
    summary_line,
    temp_files,
)
from tests.e2e.test_crash import Api, run_json

# kill points are scheduled inside the embedded store's writes.
pytestmark = pytest.mark.embedded_only

MB = 1 << 20
SMALL = 2


@dataclass
class Ledger:
    """What the test knows: every version a push reported (seq -> files), and every content ever written."""

    versions: dict[int, dict[str, bytes]] = field(default_factory=dict)
    known: dict[str, set[bytes]] = field(default_factory=dict)
    scheduled: int = 0  # kill points chosen
    kills: int = 0  # of which the process was still running, and was killed
    refused: int = 0
    temps: list[str] = field(default_factory=list)  # `.box-tmp-*` files a rerun left behind
    half: list[str] = field(default_factory=list)  # files holding none of the versions ever written
    lost: list[int] = field(default_factory=list)  # reported versions that do not restore byte for byte

    def killed(self, outcome: str) -> None:
        self.scheduled += 1
        self.kills += outcome == "killed"

    def finish(self, kind: str, device: Device, tmp: Path, record_property: Any) -> None:
        """Restore every version, print and record the summary line, then check what it says."""
        self.lost = lost_versions(device, self.versions, tmp)
        line = summary_line(kind, self.scheduled, self.kills, len(self.versions), len(self.lost), len(self.half),
                            len(self.temps), self.refused)
        print(line)
        record_property("crash_summary", line)
        assert self.lost == [], f"versions that do not restore byte for byte: {self.lost}"
        assert self.half == [], f"half-written files: {self.half[:5]}"
        assert self.temps == [], f"{len(self.temps)} temp file(s) left after a rerun: {self.temps[:5]}"
        if self.scheduled >= MIN_POINTS:
            assert self.kills >= MIN_KILLED * self.scheduled, (
                f"only {self.kills} of {self.scheduled} kill points killed: the processes end before their "
                "kill points, so the crash set is smaller than it claims")

    def reported(self, seq: int | None, files: dict[str, bytes]) -> None:
        if seq is not None:
            assert seq not in self.versions, f"commit {seq} reported twice"
            self.versions[seq] = files

    def unreported(self, head: int, files: dict[str, bytes]) -> None:
        """Commits no push reported (a killed push's, which landed): they hold `files`, the state it pushed."""
        missing = [s for s in range(1, head + 1) if s not in self.versions]
        assert len(missing) <= 1, f"commits no push explains: {missing}"
        for seq in missing:
            self.versions[seq] = files


def edit(device: Device, rng: random.Random, round_: int, known: dict[str, set[bytes]], big: bool = True) -> None:
    """A round of local work: edit, add and delete some small files; sometimes a big file."""
    for _ in range(15):
        device.write(f"s/d{rng.randrange(4)}/f{rng.randrange(60):02}.txt", rng.randbytes(rng.randrange(1, 4000)))
    for path in rng.sample(sorted(device.files()), 2):
        (device.root / path).unlink()
    if big:
        device.write(f"b/big{round_ % 3}.bin", rng.randbytes(rng.choice([1, 3, 6]) * MB))
    remember(known, device.files())


def new_device(make_device: Any, name: str) -> Device:
    device = make_device(name)
    device.root.mkdir()
    device.run("init", str(device.root), "--server", device.server.url, "--box", "docs", "--device", name)
    return device


def commit_in_flight(device: Device) -> Any:
    return lambda: (device.root / ".box" / "pending-commit").exists()


def rerun(device: Device, ledger: Ledger, *args: str, cwd: Path | None = None) -> Any:
    """Run the command again after a kill: it must succeed (exit 4 counted, then failed on)."""
    res = device.run(*args, "--json", cwd=cwd, check=False)
    ledger.refused += res.code == REFUSED
    assert res.code == 0, f"rerun of {args} exited {res.code}: {res.err}"
    return res.json()


def check_after(device: Device, ledger: Ledger, expected: dict[str, bytes]) -> None:
    """The device holds what it should (no local edit lost), nothing half written; temps left are counted
    (`ledger.temps`, checked at the end of the test so that one leftover does not hide the other checks)."""
    temps = temp_files(device.root)
    ledger.temps += [f"{device.name}: {t}" for t in temps]
    files = {p: d for p, d in device.files().items() if p not in temps}
    ledger.half += [f"{device.name}: {p}" for p in half_written(files, ledger.known)]
    assert files == expected, sorted(set(files) ^ set(expected)) or [p for p in files if files[p] != expected[p]]


def push_round(a: Device, server: ServerProc, ledger: Ledger, rng: random.Random, kill_server: bool,
               longest: float) -> None:
    """One push killed at a random point (or once its commit is in flight), then pushed again."""
    before = a.files()
    proc = start(a, "push", "--json")
    event = commit_in_flight(a) if rng.random() < 0.4 else None
    if kill_server:
        assert server.proc is not None
        victim: subprocess.Popen[Any] = server.proc
        if event is not None:
            longest = 0.05
        outcome = kill_at(victim, rng, longest, event, during=proc)  # type: ignore[arg-type]
        if outcome == "killed":
            server.proc = None
            server.start()
        code, out, err = reap(proc)
        assert "Traceback" not in err, err
        if code == 0:
            ledger.reported(run_json_out(out), before)
    else:
        outcome = kill_at(proc, rng, 0.05 if event is not None else longest, event)
        code, out, _ = reap(proc)
        if outcome == "finished":
            assert code == 0
            ledger.reported(run_json_out(out), before)
    ledger.killed(outcome)
    after = before
    if not kill_server and outcome == "killed":
        # A local edit made after the crash is neither lost nor mistaken for the killed push's.
        a.write("s/after-crash.txt", rng.randbytes(100))
        after = a.files()
        remember(ledger.known, after)
    ledger.reported(rerun(a, ledger, "push")["seq"], after)
    ledger.unreported(Api(a.server).get("")["head"], before)
    check_after(a, ledger, after)
    st = run_json(a, "status")
    assert (st["added"], st["modified"], st["deleted"]) == ([], [], []), st


def run_json_out(out: str) -> int | None:
    seq = json.loads(out)["seq"]
    return None if seq is None else int(seq)


def test_server_killed_during_pushes(make_device: Any, server: ServerProc, tmp_path: Path,
                                     record_property: Any) -> None:
    rng = random.Random(1701)
    ledger = Ledger()
    a = new_device(make_device, "laptop")
    for round_ in range(crash_count(SMALL)):
        edit(a, rng, round_, ledger.known)
        push_round(a, server, ledger, rng, kill_server=True, longest=1.5)
    ledger.finish("server kill during push", a, tmp_path, record_property)


def test_client_killed_during_pushes(make_device: Any, server: ServerProc, tmp_path: Path,
                                     record_property: Any) -> None:
    rng = random.Random(1702)
    ledger = Ledger()
    a = new_device(make_device, "laptop")
    for round_ in range(crash_count(SMALL)):
        edit(a, rng, round_, ledger.known)
        push_round(a, server, ledger, rng, kill_server=False, longest=1.5)
    ledger.finish("client kill during push", a, tmp_path, record_property)


@pytest.mark.crash  # a push of 10,050 files per kill point: only in `make test-crash`
def test_server_killed_during_staged_pushes(make_device: Any, server: ServerProc, tmp_path: Path,
                                            record_property: Any) -> None:
    """Pushes of 10,050 changed files go in staged parts; the server dies while staging or in the final commit."""
    rng = random.Random(1703)
    ledger = Ledger()
    a = new_device(make_device, "laptop")
    for round_ in range(max(1, crash_count(SMALL) // 2)):
        for i in range(10_050):
            a.write(f"many/d{i % 50}/f{i:05}.txt", f"round {round_} file {i}\n")
        remember(ledger.known, a.files())
        push_round(a, server, ledger, rng, kill_server=True, longest=6.0)
    ledger.finish("server kill during staged push", a, tmp_path, record_property)


def test_client_killed_during_pulls_and_clones(make_device: Any, server: ServerProc, tmp_path: Path,
                                               record_property: Any) -> None:
    """Device B pulls (and new devices clone) while A pushes; each is killed at a random point."""
    rng = random.Random(1704)
    ledger = Ledger()
    a = new_device(make_device, "laptop")
    b = make_device("desk")
    edit(a, rng, 0, ledger.known)
    ledger.reported(run_json(a, "push")["seq"], a.files())
    b.run("clone", server.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    for round_ in range(1, crash_count(SMALL) + 1):
        edit(a, rng, round_, ledger.known)
        ledger.reported(run_json(a, "push")["seq"], a.files())
        # B has a local edit of its own, in a file A never touches: the pull must keep it.
        b.write(f"desk-notes/{round_}.txt", rng.randbytes(300))
        mine = {p: d for p, d in b.files().items() if p.startswith("desk-notes/")}
        remember(ledger.known, mine)
        proc = start(b, "pull", "--json")
        ledger.killed(kill_at(proc, rng, 0.8))
        reap(proc)
        ledger.half += [f"desk: {p}" for p in half_written(b.files(), ledger.known)]
        rerun(b, ledger, "pull")
        check_after(b, ledger, a.files() | mine)

        c = make_device(f"new{round_}")
        proc = start(c, "clone", server.url, "docs", str(c.root), "--device", c.name, cwd=c.config)
        ledger.killed(kill_at(proc, rng, 0.8))
        reap(proc)
        if (c.root / ".box" / "config").exists():
            ledger.half += [f"{c.name}: {p}" for p in half_written(c.files(), ledger.known)]
            rerun(c, ledger, "pull")
        else:
            shutil.rmtree(c.root, ignore_errors=True)  # died before it made the folder a box: clone again
            rerun(c, ledger, "clone", server.url, "docs", str(c.root), "--device", c.name, cwd=c.config)
        check_after(c, ledger, a.files())
    ledger.finish("client kill during pull/clone", a, tmp_path, record_property)
