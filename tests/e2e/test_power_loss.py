"""Power cuts of the server during pushes: only what it fsynced survives (tests/e2e/powercut.py).

The server runs under the power-cut model; after a few pushes it dies at a random point of the next
one (a seeded RNG: a random delay, or the moment the push's commit is in flight). Its data folder is
rebuilt as a disk would hold it after the cut and a server starts on that. Then every version a push
reported restores byte for byte, meta.db passes SQLite's integrity check, every block of every journal
entry lies inside a pack file, and the device's next push goes through. A device that loses power while
it pulls keeps no half-written file and an index that claims nothing its disk lost. BOX_CRASH_POINTS sets the
number of cuts (half of it, of each; `make test-crash`: 12); `make test` runs one of the server and two of
the device.
"""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProc
from tests.e2e.crashkit import crash_count, half_written, kill_at, reap, remember, start, temp_files
from tests.e2e.powercut import PowerCut, build
from tests.e2e.test_crash import check_restores_of, run_json
from tests.e2e.test_crash_points import commit_in_flight, edit, new_device, run_json_out

# the power cut keeps only what was fsynced in the embedded store's folder.
pytestmark = pytest.mark.embedded_only


def check_store(data: Path) -> dict[str, int]:
    """meta.db is whole and every block a journal entry names is in the blocks table and inside its pack."""
    db = sqlite3.connect(data / "meta.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        where = {bytes(r[0]): (r[1], r[2], r[3]) for r in db.execute("SELECT sha256, pack, offset, stored_size "
                                                                      "FROM blocks")}
        named = {bytes(blob[i : i + 32]) for (blob,) in db.execute("SELECT blocks FROM journal")
                 for i in range(0, len(blob), 32)}
        heads = db.execute("SELECT COUNT(*) FROM commits").fetchone()[0]
    finally:
        db.close()
    missing = [d.hex() for d in named if d not in where]
    assert missing == [], f"{len(missing)} block(s) of the journal are not in the blocks table"
    short = []
    for digest in named:
        pack, offset, size = where[digest]
        path = data / "blocks" / "packs" / pack[:2] / f"{pack}.pack"
        if not path.exists() or path.stat().st_size < offset + size:
            short.append((digest.hex(), pack))
    assert short == [], f"{len(short)} block(s) of the journal are not inside their pack, e.g. {short[:3]}"
    return {"blocks": len(named), "commits": heads}


def test_power_cut_model_drops_what_was_not_fsynced(tmp_path: Path) -> None:
    """The model itself: an fsynced file survives, an unsynced write and an unsynced rename do not."""
    folder = tmp_path / "disk"
    folder.mkdir()
    (folder / "old.txt").write_bytes(b"before")
    cut = PowerCut(folder, tmp_path / "shadow", build(tmp_path / "powercut.so"))
    script = (
        "import os\n"
        "def put(name, data, sync):\n"
        "    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC); os.write(fd, data)\n"
        "    if sync: os.fsync(fd)\n"
        "    os.close(fd)\n"
        "put('synced.txt', b'kept', True)\n"
        "put('old.txt', b'unsynced rewrite', False)\n"
        "put('tmp.txt', b'renamed, folder not synced', True); os.rename('tmp.txt', 'moved.txt')\n"
        "d = os.open('.', os.O_RDONLY); os.fsync(d); os.close(d)\n"
        "put('late.txt', b'named after the folder sync', True)\n"
        "put('synced.txt', b'then rewritten without a sync', False)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=folder, env={**cut.env()}, check=True)
    after = tmp_path / "after"
    cut.rebuild(after)
    got = {p.name: p.read_bytes() for p in after.iterdir()}
    assert got == {"old.txt": b"before", "synced.txt": b"kept", "moved.txt": b"renamed, folder not synced"}


def test_server_power_cut_during_pushes(make_device: Any, server: ServerProc, tmp_path: Path) -> None:
    library = build(tmp_path / "powercut.so")
    rng = random.Random(1789)
    known: dict[str, set[bytes]] = {}
    reported: dict[int, dict[str, bytes]] = {}
    a = new_device(make_device, "laptop")
    for cut in range(max(1, crash_count(2) // 2)):
        server.kill(signal.SIGTERM)  # a clean stop: everything so far is on disk
        model = PowerCut(server.data, tmp_path / f"shadow{cut}", library)
        with pytest.MonkeyPatch.context() as env:
            for name, value in model.env().items():
                env.setenv(name, value)
            server.start()
        first = max(reported, default=0) + 1
        for round_ in range(rng.randrange(1, 4)):
            edit(a, rng, round_, known)
            seq = run_json_out(a.run("push", "--json").out)
            assert seq is not None
            reported[seq] = a.files()
        edit(a, rng, cut, known)
        before = a.files()
        proc = start(a, "push", "--json")
        assert server.proc is not None
        event = commit_in_flight(a) if rng.random() < 0.5 else None
        kill_at(server.proc, rng, 0.05 if event else 1.5, event)  # type: ignore[arg-type]  # the cut
        server.proc = None
        proc.kill()  # the client may be anywhere in its retries; it is not the one being tested here
        code, out, _ = reap(proc)
        if code == 0 and (seq := run_json_out(out)) is not None:
            reported[seq] = before
        survived = tmp_path / f"data-after-cut{cut}"
        counts = model.rebuild(survived)
        shutil.rmtree(server.data)
        survived.rename(server.data)
        server.start()
        store = check_store(server.data)
        # This cut's versions and a few earlier ones restore now (all of them at the end).
        earlier = [s for s in reported if s < first]
        sample = set(rng.sample(earlier, min(3, len(earlier)))) | {s for s in reported if s >= first}
        check_restores_of(a, {s: reported[s] for s in sorted(sample)}, tmp_path / f"restored-after-cut{cut}")
        res = a.run("push", "--json", check=False)
        assert res.code == 0, f"push after the cut exited {res.code}: {res.err}"
        if (seq := run_json_out(res.out)) is not None:
            reported[seq] = before
        remember(known, a.files())
        print(f"cut {cut}: {counts}, store {store}, versions reported {len(reported)}")
    check_restores_of(a, reported, tmp_path / "restored-at-end")


def test_device_power_cut_during_pulls(make_device: Any, server: ServerProc, tmp_path: Path) -> None:
    """A device loses power while it pulls: no half-written file, and its index claims nothing that is
    not on its disk (else the next pull would skip a file the index says it has, or a push delete it)."""
    library = build(tmp_path / "powercut.so")
    rng = random.Random(1790)
    known: dict[str, set[bytes]] = {}
    a = new_device(make_device, "laptop")
    edit(a, rng, 0, known)
    a.run("push")
    b = make_device("desk")
    b.run("clone", server.url, "docs", str(b.root), "--device", "desk", cwd=b.config)
    for cut in range(max(2, crash_count(2) // 2)):
        for round_ in range(2):
            edit(a, rng, cut + round_, known)
            a.run("push")
        model = PowerCut(b.root, tmp_path / f"shadow-desk{cut}", library)
        proc = start(b, "pull", "--json", env=model.env())
        # The cut: at a random point of the pull, or (every other time) once it is over, which is when
        # the index has recorded everything the pull did and all of it must be on the disk.
        if cut % 2:
            kill_at(proc, rng, 0.5, lambda: temp_files(b.root) != [])  # once it has begun writing files
        else:
            kill_at(proc, rng, 600)
        reap(proc)
        survived = tmp_path / f"desk-after-cut{cut}"
        counts = model.rebuild(survived)
        shutil.rmtree(b.root)
        survived.rename(b.root)
        assert half_written(b.files(), known) == []
        res = b.run("pull", "--json", check=False)
        assert res.code == 0, res.err
        mine, theirs = b.files(), a.files()
        assert mine.keys() == theirs.keys(), (counts, sorted(mine.keys() ^ theirs.keys())[:5])
        assert [p for p in mine if mine[p] != theirs[p]] == [], counts
        assert temp_files(b.root) == []
        st = run_json(b, "status")
        assert (st["added"], st["modified"], st["deleted"]) == ([], [], []), st
        print(f"desk cut {cut}: {counts}")
