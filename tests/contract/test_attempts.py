"""The AttemptLog contract (server_min/limits/base.py), run on every implementation."""

from __future__ import annotations

import threading
from collections.abc import Callable

from server_min.limits.base import AttemptLog, Attempts

Logs = Callable[[], AttemptLog]


def test_a_record_is_kept_until_it_expires_or_is_forgotten(attempts: Logs) -> None:
    log = attempts()
    assert log.get("addr:10.0.0.1", 1000.0) is None
    record = Attempts((999.5, 1000.0), 0.0, 2, 1060.0)
    log.update("addr:10.0.0.1", 1000.0, lambda current: record)
    assert log.get("addr:10.0.0.1", 1000.0) == record
    assert log.get("addr:10.0.0.2", 1000.0) is None
    assert log.get("addr:10.0.0.1", 1060.0) is None  # expired at `now`, whatever the store still holds
    log.forget("addr:10.0.0.1")
    assert log.get("addr:10.0.0.1", 1000.0) is None


def test_an_update_sees_the_current_record_and_an_expired_one_as_none(attempts: Logs) -> None:
    log, seen = attempts(), []

    def change(current: Attempts | None) -> Attempts:
        seen.append(current)
        return Attempts((1000.0,), 1010.0, 1, 1070.0)

    log.update("k", 1000.0, change)
    log.update("k", 1001.0, change)
    log.update("k", 1070.0, change)
    assert seen[0] is None and seen[1] == Attempts((1000.0,), 1010.0, 1, 1070.0) and seen[2] is None


def test_updates_from_two_processes_at_once_are_never_lost(attempts: Logs) -> None:
    logs = [attempts(), attempts()]

    def count(log: AttemptLog) -> None:
        for _ in range(15):
            log.update("k", 1000.0, lambda c: Attempts((), 0.0, (c.strikes if c else 0) + 1, 5000.0))

    threads = [threading.Thread(target=count, args=(logs[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = logs[0].get("k", 1000.0)
    assert record is not None and record.strikes == 90
