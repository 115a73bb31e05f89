"""A push of many files is committed in parts sent while its blocks upload, and is still one commit."""

from __future__ import annotations

from boxctl.transfer.staging import STAGE_PART
from tests.conftest import Device
from tests.e2e.helpers import commits, push


def test_many_files_push_in_staged_parts_as_one_commit(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    # Over twelve upload batches of 2,000 blocks: the uploader lets 4 run at once, so by the time the last
    # one is queued at least 9 have landed (the first 3 among them but for a freak delay), and the files
    # of those go ahead in parts.
    count = 5 * STAGE_PART
    for i in range(count):
        a.write(f"d{i // 1000:02d}/f{i:05d}.txt", f"file {i}\n")
    a.write("old.txt", "soon gone")
    result = push(a)
    folders = count // 1000
    assert len(result["added"]) == count + folders + 1
    assert result["changes_staged"] >= STAGE_PART, result["changes_staged"]
    assert [c["changes"] for c in commits(a)][:1] == [count + folders + 1]  # one commit for the whole push
    b.run("pull")
    assert b.files() == a.files()
    assert a.server.count_rows("stage_changes") == 0  # the stage was applied and dropped

    (a.root / "old.txt").unlink()
    a.write("d00/f00000.txt", "changed\n")
    result = push(a)  # a small push: one request, nothing staged
    assert result["changes_staged"] == 0 and result["deleted"] == ["old.txt"]
    b.run("pull")
    assert b.files() == a.files()
