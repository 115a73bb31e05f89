"""The Notifier contract (server_min/notify/base.py), run on every implementation."""

from __future__ import annotations

import asyncio
import threading
import time

from server_min.notify.base import KICKED, Notifier


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_publish_wakes_the_waiters_of_that_box_only(notifier: Notifier) -> None:
    async def scenario() -> tuple[object, object]:
        with notifier.waiter(1, 10) as mine, notifier.waiter(2, 10) as other:
            assert notifier.waiting() == 2
            notifier.publish(1, 7)
            return await mine.wait(5), await other.wait(0.05)

    assert run(scenario()) == (7, None)
    assert notifier.waiting() == 0


def test_timeout_without_a_commit(notifier: Notifier) -> None:
    async def scenario() -> tuple[object, float]:
        with notifier.waiter(1, 10) as waiter:
            started = time.monotonic()
            return await waiter.wait(0.1), time.monotonic() - started

    woken, took = run(scenario())  # type: ignore[misc]
    assert woken is None and 0.09 <= took < 2


def test_a_publish_before_the_wait_is_not_lost(notifier: Notifier) -> None:
    """Registered before the head is read: a commit landing in between still wakes the wait."""
    async def scenario() -> object:
        with notifier.waiter(1, 10) as waiter:
            notifier.publish(1, 3)
            await asyncio.sleep(0.01)
            return await waiter.wait(5)

    assert run(scenario()) == 3


def test_publish_from_another_thread(notifier: Notifier) -> None:
    async def scenario() -> object:
        with notifier.waiter(4, 10) as waiter:
            threading.Timer(0.05, notifier.publish, args=(4, 9)).start()
            return await waiter.wait(5)

    assert run(scenario()) == 9


def test_kick_wakes_every_waiter_of_the_user(notifier: Notifier) -> None:
    async def scenario() -> tuple[object, object, object]:
        with notifier.waiter(1, 10) as a, notifier.waiter(2, 10) as b, notifier.waiter(1, 11) as c:
            notifier.kick_user(10)
            return await a.wait(5), await b.wait(5), await c.wait(0.05)

    assert run(scenario()) == (KICKED, KICKED, None)
