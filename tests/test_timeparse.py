"""boxctl.timeparse: the times users type for --at."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from boxctl.errors import UsageError
from boxctl.timeparse import parse_time

NOW = 1_764_065_700.0  # 2025-11-25 10:15:00 UTC


@pytest.mark.parametrize("text,ago", [
    ("30s", 30), ("90m", 5400), ("2h", 7200), ("1d", 86400), ("2w", 2 * 604800), ("1.5h", 5400),
    ("2h ago", 7200), ("2 h", 7200), ("10m ago", 600), (" 3D ", 3 * 86400), ("0s", 0),
])
def test_ages(text: str, ago: float) -> None:
    assert parse_time(text, now=NOW) == pytest.approx(NOW - ago)


@pytest.mark.parametrize("text", ["now", "NOW", " now "])
def test_now(text: str) -> None:
    assert parse_time(text, now=NOW) == NOW


def test_now_defaults_to_the_clock() -> None:
    before = time.time()
    value = parse_time("now")
    assert before <= value <= time.time()
    assert parse_time("1h") == pytest.approx(time.time() - 3600, abs=5)


@pytest.mark.parametrize("text,expected", [("@1764065700", 1764065700.0), ("@0", 0.0), ("@1.5", 1.5)])
def test_epoch(text: str, expected: float) -> None:
    assert parse_time(text, now=NOW) == expected


def test_iso_with_offset() -> None:
    assert parse_time("2025-11-25T10:15:00+00:00") == NOW
    assert parse_time("2025-11-25T11:15:00+01:00") == NOW
    assert parse_time("2025-11-25 10:15:00Z") == NOW


def test_iso_without_offset_is_local_time() -> None:
    expected = datetime(2025, 11, 25, 10, 15).timestamp()  # naive: the machine's local time
    assert parse_time("2025-11-25 10:15") == expected
    assert parse_time("2025-11-25T10:15:00") == expected
    assert parse_time("2025-11-25") == datetime(2025, 11, 25).timestamp()


def test_iso_round_trip() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_time(when.isoformat()) == when.timestamp()


@pytest.mark.parametrize("text", ["", "yesterday", "2h from now", "-2h", "2y", "@", "@abc", "2025-13-01",
                                  "2025-11-25 25:00", "h", "1e3s"])
def test_unreadable_times_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_time(text, now=NOW)
    assert repr(text) in info.value.message
    assert info.value.exit_code == 2
