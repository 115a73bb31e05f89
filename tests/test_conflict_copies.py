"""Finding conflicted copies again by their names (boxctl/engine/conflicts.py: parse_copy, find_copies)."""

from __future__ import annotations

import time

import pytest

from boxctl.engine.conflicts import conflict_name, find_copies, parse_copy

WHEN = time.mktime((2026, 11, 25, 10, 15, 0, 0, 0, -1))


@pytest.mark.parametrize("path", ["report.txt", "dir/sub/report.final.txt", "Makefile", ".bashrc", "a (1).txt",
                                  "x (conflicted copy from desk 2026-01-01 00-00-00).md", "dir/folder"])
@pytest.mark.parametrize("device", ["laptop", "Ann's Mac (2)", "dev 2026-11-25 10-15-00"])
@pytest.mark.parametrize("n", [1, 2, 17])
def test_every_name_conflict_name_makes_parses_back(path: str, device: str, n: int) -> None:
    assert parse_copy(conflict_name(path, device, WHEN, n)) == (path, device, "2026-11-25 10-15-00")


@pytest.mark.parametrize("name", ["report.txt", "a (conflicted copy) b.txt", "a (conflicted copy from x).txt",
                                  "a (conflicted copy from x 2026-11-25).txt", "(conflicted copy from x 2026-11-25 "
                                  "10-15-00).txt"])
def test_other_names_are_not_copies(name: str) -> None:
    assert parse_copy(name) is None


def test_find_copies_pairs_each_with_its_file_and_lists_a_folder_copy_once() -> None:
    scan = {"r.txt": "file", "r (conflicted copy from a 2026-11-25 10-15-00).txt": "file",
            "d (conflicted copy from b 2026-11-25 10-15-00)": "dir",
            "d (conflicted copy from b 2026-11-25 10-15-00)/x (conflicted copy from c 2026-11-25 10-15-00)": "file"}
    found = find_copies(scan)
    assert [(c.copy, c.path, c.device, c.kind, c.original_exists) for c in found] == [
        ("d (conflicted copy from b 2026-11-25 10-15-00)", "d", "b", "dir", False),
        ("r (conflicted copy from a 2026-11-25 10-15-00).txt", "r.txt", "a", "file", True)]
