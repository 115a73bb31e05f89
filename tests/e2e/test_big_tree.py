"""A folder big enough (25,000 files) that status and push share its walk out among processes,
started as the command starts: every change must still be seen, exactly once."""

from __future__ import annotations

import os
import time

from tests.conftest import Device
from tests.e2e.helpers import assert_clean, pull, push, status

FOLDERS, PER_FOLDER = 50, 500


def test_a_big_tree_syncs_every_change_through_the_shared_walk(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    past = time.time_ns() - 60 * 10**9  # so the index keeps every file's stat (none was written "just now")
    for d in range(FOLDERS):
        folder = a.root / f"d{d:02}"
        folder.mkdir()
        for f in range(PER_FOLDER):
            path = folder / f"f{f:03}.txt"
            path.write_bytes(b"%d/%d\n" % (d, f))
            os.utime(path, ns=(past, past))
    first = push(a)
    assert len(first["added"]) == FOLDERS * (PER_FOLDER + 1)
    assert_clean(a)  # the status that writes the snapshot of stats

    a.write("d07/f010.txt", "edited\n")
    (a.root / "d33/f499.txt").unlink()
    a.write("d49/new.txt", "added\n")
    a.write("fresh/one.txt", "a new folder\n")
    st = status(a)
    assert (st["added"], st["modified"], st["deleted"]) == (
        ["d49/new.txt", "fresh", "fresh/one.txt"], ["d07/f010.txt"], ["d33/f499.txt"])
    pushed = push(a)
    assert (pushed["added"], pushed["modified"], pushed["deleted"]) == (st["added"], st["modified"], st["deleted"])
    assert_clean(a)

    pull(b)
    assert b.files() == a.files()
    assert b.read("d07/f010.txt") == b"edited\n" and not (b.root / "d33/f499.txt").exists()

    # sync pulls before it looks, so it walks after the pull (never a walk begun before it).
    b.write("d01/f001.txt", "from b\n")
    a.write("d02/f002.txt", "from a\n")
    push(a)
    synced = b.run("sync", "--json").json()
    assert synced["push"]["modified"] == ["d01/f001.txt"], synced
    assert b.read("d02/f002.txt") == b"from a\n"
    assert_clean(b)
