"""Where pulls write temp files, and how the next command finds and removes them (boxctl/temps.py)."""

from __future__ import annotations

from pathlib import Path

from boxctl.local import temps
from boxctl.local.temps import PullTemps


def box(tmp_path: Path) -> Path:
    (tmp_path / ".box").mkdir()
    for folder in ("a", "a/b", "c"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return tmp_path


def test_folders_noted_by_a_cut_off_pull_are_listed_by_the_next(tmp_path: Path) -> None:
    root = box(tmp_path)
    with PullTemps(root) as t:
        assert t.leftovers() == []
        t.note({"", "a/b"})
        (root / ".box-tmp-1").write_text("x")
        (root / "a/b/.box-tmp-2").write_text("x")
        (root / "c/.box-tmp-3").write_text("x")  # in a folder no pull noted: found by a walk, not here
        (root / "a/b/kept.txt").write_text("a user's file")
    with PullTemps(root) as t:  # the next pull
        assert sorted(p.relative_to(root).as_posix() for p in t.leftovers()) == [".box-tmp-1", "a/b/.box-tmp-2"]
        t.clear()
    with PullTemps(root) as t:
        assert t.folders == set() and t.leftovers() == []


def test_resume_keeps_the_longest_attempt_and_removes_the_rest(tmp_path: Path) -> None:
    root = box(tmp_path)
    partial = root / "a/.box-tmp-pabc"
    partial.write_bytes(b"12")
    (root / "a/.box-tmp-pabc-prev").write_bytes(b"1234")  # the attempt that got furthest
    (root / "a/.box-tmp-pabc-prev2").write_bytes(b"1")
    stale = [root / "a/.box-tmp-pold", root / "c/.box-tmp-0123"]
    for p in stale:
        p.write_bytes(b"of no use now")
    offered: list[Path] = []
    kept = temps.resume([partial], [partial, *stale], offered.append)
    assert kept == offered == [root / "a/.box-tmp-pabc-prev"]
    assert kept[0].read_bytes() == b"1234"
    assert sorted(p.name for p in root.rglob(".box-tmp-*")) == [".box-tmp-pabc-prev"]
    # Cut off again: the new attempt (under the partial's name) got further, and wins.
    partial.write_bytes(b"123456")
    kept = temps.resume([partial], [], offered.append)
    assert kept[0].read_bytes() == b"123456" and not partial.exists()


def test_status_removes_temps_but_keeps_what_a_pull_will_resume(tmp_path: Path) -> None:
    root = box(tmp_path)
    with PullTemps(root) as t:
        t.note({"a"})
    found = [root / "a/.box-tmp-pabc", root / "a/.box-tmp-12", root / "c/.box-tmp-pdef", root / ".box-tmp-34"]
    for p in found:
        p.write_text("x")
    temps.clean(root, [str(p) for p in found])
    assert [p.relative_to(root).as_posix() for p in root.rglob(".box-tmp-*")] == ["a/.box-tmp-pabc"]


def test_nothing_is_removed_while_a_pull_runs(tmp_path: Path) -> None:
    root = box(tmp_path)
    (root / "c/.box-tmp-12").write_text("in use")
    with PullTemps(root) as t:  # a running pull holds the lock
        t.note({"c"})
        assert temps.resumable(root) is None
        temps.clean(root, [str(root / "c/.box-tmp-12")])
        assert (root / "c/.box-tmp-12").exists()
    temps.clean(root, [str(root / "c/.box-tmp-12")])
    assert not (root / "c/.box-tmp-12").exists()
