"""boxctl.local.forked: a function run in a forked child, its result read back."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from boxctl.local.forked import Forked, ForkFailed, can_fork

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked children are used on Linux only")


def test_the_childs_result_comes_back_whole() -> None:
    big = {f"d{i:03}/f{j:04}.txt": ("file", j, i * j, i + j, 0o644, None) for i in range(50) for j in range(200)}
    child = Forked(lambda: (os.getpid(), big))
    pid, found = child.result()
    assert pid != os.getpid() and pid == child.pid
    assert found == big  # 10,000 entries: more than a pipe holds, read while the child writes


def test_a_child_that_raises_gives_fork_failed_not_its_exception() -> None:
    def boom() -> None:
        raise RuntimeError("in the child")

    with pytest.raises(ForkFailed, match="ended with 1"):
        Forked(boom).result()


def test_a_result_marshal_cannot_carry_is_a_failure() -> None:
    with pytest.raises(ForkFailed):
        Forked(lambda: object()).result()


def test_no_fork_while_another_thread_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not can_fork()  # the child could inherit a lock that thread holds
    finally:
        stop.set()
        other.join()
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert can_fork()
