"""`OWNER/BOX[/PATH]` references of put, get and cat, and diff's `--rev A[..B]` (boxctl/engine/remote.py, diff.py)."""

from __future__ import annotations

import pytest

from boxctl.engine.diff import parse_revs
from boxctl.engine.remote import BoxRef, parse_ref
from boxctl.errors import UsageError


@pytest.mark.parametrize(("text", "ref"), [
    ("alice/ci", BoxRef("alice", "ci", "", True)),
    ("alice/ci/", BoxRef("alice", "ci", "", True)),
    ("alice/ci/builds/42", BoxRef("alice", "ci", "builds/42", False)),
    ("alice/ci/builds/42/", BoxRef("alice", "ci", "builds/42", True)),
])
def test_references(text: str, ref: BoxRef) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text", ["ci", "", "/ci", "alice/", "alice//x", "alice/ci/../x", "alice/ci/a//b",
                                  "alice/ci/a\x00b"])
def test_bad_references_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_ref(text)


def test_revision_spans() -> None:
    assert parse_revs("3..7") == (3, 7)
    assert parse_revs("3..") == (3, None)
    assert parse_revs("3") == (3, None)
    for bad in ("", "..7", "a..b", "-1", "3..-1", "3...7", "3..7..9"):
        with pytest.raises(UsageError):
            parse_revs(bad)
