"""box_common.paths: the one definition of a valid Box path."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from box_common.paths import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    InvalidPath,
    is_under,
    is_valid_path,
    normalize_path,
    normalize_prefix,
    parent_paths,
)


@pytest.mark.parametrize("path", [
    "a", "a.txt", "dir/sub/file.txt", ".hidden", "a b/c d.txt", "...", "a..b", "..a", "x/.y", "日本語/ファイル.txt",
    "emoji-\U0001f600.txt", "trailing space ", "-dash", "a" * MAX_NAME_BYTES, "/".join(["d"] * MAX_DEPTH),
])
def test_valid_paths_are_kept_as_they_are(path: str) -> None:
    assert normalize_path(path) == path
    assert is_valid_path(path)


def test_nfd_becomes_nfc() -> None:
    nfd = "cafe\u0301/re\u0301sume\u0301.txt"
    nfc = unicodedata.normalize("NFC", nfd)
    assert nfc != nfd
    assert normalize_path(nfd) == nfc
    assert not is_valid_path(nfd)  # accepted after normalising, but not canonical as given
    assert is_valid_path(nfc)


BAD = {
    "empty": "",
    "absolute": "/etc/passwd",
    "absolute root": "/",
    "dotdot": "..",
    "dotdot first": "../x",
    "dotdot middle": "a/../b",
    "dotdot last": "a/..",
    "dot": ".",
    "dot first": "./a",
    "dot middle": "a/./b",
    "double slash": "a//b",
    "trailing slash": "a/",
    "nul": "a\x00b",
    "newline": "a\nb",
    "escape char": "a\x1bb",
    "del": "a\x7fb",
    "backslash": "a\\b",
    "backslash dotdot": "..\\..\\windows",
    "drive": "C:/x",
    "drive bare": "c:x",
    "long name": "n" * (MAX_NAME_BYTES + 1),
    "long multibyte name": "é" * (MAX_NAME_BYTES // 2 + 1),
    "deep": "/".join(["d"] * (MAX_DEPTH + 1)),
    "long path": "/".join(["p" * 200] * 21),
    "lone surrogate": "a\udc80b",
}


@pytest.mark.parametrize("path", list(BAD.values()), ids=list(BAD))
def test_invalid_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_path(path)
    assert not is_valid_path(path)


def test_long_path_limit_is_in_bytes() -> None:
    assert len("/".join(["p" * 200] * 21).encode()) > MAX_PATH_BYTES
    ok = "/".join(["p" * 200] * 20)
    assert normalize_path(ok) == ok


def test_message_names_the_path() -> None:
    with pytest.raises(InvalidPath, match=re.escape("secret/../x")):
        normalize_path("secret/../x")


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidPath):
        normalize_path(None)  # type: ignore[arg-type]
    assert not is_valid_path(b"a")  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix,expected", [
    ("", ""), (".", ""), ("/", ""), ("a", "a"), ("/a/b/", "a/b"), ("a/b", "a/b"), ("cafe\u0301", "caf\u00e9"),
])
def test_normalize_prefix(prefix: str, expected: str) -> None:
    assert normalize_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["..", "../a", "a/../b", "a//b", "a\x00", "./.."])
def test_normalize_prefix_refuses_escapes(prefix: str) -> None:
    with pytest.raises(InvalidPath):
        normalize_prefix(prefix)


def test_is_under() -> None:
    assert is_under("a/b", "")
    assert is_under("a", "a")
    assert is_under("a/b/c", "a")
    assert is_under("a/b/c", "a/b")
    assert not is_under("ab", "a")
    assert not is_under("a", "a/b")
    assert not is_under("b/a", "a")


def test_parent_paths() -> None:
    assert parent_paths("a") == []
    assert parent_paths("a/b") == ["a"]
    assert parent_paths("a/b/c.txt") == ["a", "a/b"]


@given(st.text(max_size=60))
def test_whatever_is_accepted_is_canonical_and_stays_inside(text: str) -> None:
    try:
        path = normalize_path(text)
    except InvalidPath:
        return
    assert normalize_path(path) == path  # idempotent
    assert is_valid_path(path)
    assert not path.startswith("/")
    assert "\\" not in path and "\x00" not in path
    assert all(part not in ("", ".", "..") for part in path.split("/"))
    assert unicodedata.is_normalized("NFC", path)


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10),
                min_size=1, max_size=5))
def test_joined_parts_with_dotdot_are_refused(parts: list[str]) -> None:
    parts = [*parts[:1], "..", *parts[1:]]
    with pytest.raises(InvalidPath):
        normalize_path("/".join(parts))


@given(st.lists(st.text(alphabet="ab.-_ /:\\é\x00~", min_size=0, max_size=6), min_size=1, max_size=5))
def test_the_fast_path_for_plain_paths_agrees_with_every_rule(names: list[str]) -> None:
    from box_common.paths import _normalize_checked

    path = "/".join(names)
    try:
        expected: str | None = _normalize_checked(path) if path else None
    except InvalidPath:
        expected = None
    try:
        got: str | None = normalize_path(path)
    except InvalidPath:
        got = None
    assert got == expected


def test_the_fast_path_keeps_the_limits() -> None:
    with pytest.raises(InvalidPath):
        normalize_path("/".join(["a"] * (MAX_DEPTH + 1)))
    assert normalize_path("/".join(["a"] * MAX_DEPTH)) == "/".join(["a"] * MAX_DEPTH)
    with pytest.raises(InvalidPath):
        normalize_path("/".join(["b" * 200] * 21))  # 4220 bytes
    with pytest.raises(InvalidPath):
        normalize_path("x" * 256)
    for bad in ("a/./b", "a/../b", "..", ".", "a//b", "a/", "/a"):
        with pytest.raises(InvalidPath):
            normalize_path(bad)
