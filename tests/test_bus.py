"""server_min/notify/bus.py over a bus in this process, whose failures the test decides: reconnection with
backoff, the look-again wake-up, a publish that cannot be sent, a bus that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable

import pytest

from server_min.notify.base import LOOK_AGAIN
from server_min.notify.bus import POLL, BusNotifier, BusUnavailable


class FakeBus:
    """Delivers what it is sent to its listener; `drop` cuts the listening connection, `refuse` the next ones."""

    where = "fake bus"
    name = "fake-listener"

    def __init__(self, refuse: int = 0) -> None:
        self.messages: queue.Queue[str] = queue.Queue()
        self.refuse = refuse  # connections to refuse before one succeeds
        self.attempts = 0
        self.send_fails = False
        self.drop = threading.Event()
        self.closed = False

    def send(self, payload: str) -> None:
        if self.send_fails:
            raise ConnectionError("connection refused")
        self.messages.put(payload)

    def listen(self, deliver: Callable[[str], None], listening: Callable[[], None], stop: threading.Event) -> None:
        self.attempts += 1
        if self.refuse > 0:
            self.refuse -= 1
            raise ConnectionError("connection refused")
        listening()
        while not stop.is_set():
            if self.drop.is_set():
                self.drop.clear()
                raise ConnectionError("server closed the connection")
            with contextlib.suppress(queue.Empty):
                deliver(self.messages.get(timeout=POLL))

    def close(self) -> None:
        self.closed = True


def test_a_listener_that_cannot_connect_retries_then_every_waiter_looks_again() -> None:
    bus = FakeBus()
    notifier = BusNotifier(bus, connect_timeout=5)

    async def scenario() -> tuple[object, object]:
        with notifier.waiter(1, 10) as a, notifier.waiter(2, 11) as b:
            bus.refuse = 3  # the connection drops, and the next three attempts fail
            bus.drop.set()
            return await a.wait(10), await b.wait(10)

    try:
        assert asyncio.run(scenario()) == (LOOK_AGAIN, LOOK_AGAIN)
        assert bus.attempts == 5 and notifier.reconnects == 1
    finally:
        notifier.close()
    assert bus.closed and not notifier._thread.is_alive()


def test_a_publish_that_cannot_be_sent_still_wakes_this_process(caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus()
    notifier = BusNotifier(bus, connect_timeout=5)

    async def scenario() -> object:
        with notifier.waiter(4, 10) as waiter:
            bus.send_fails = True
            notifier.publish(4, 12)
            return await waiter.wait(5)

    try:
        with caplog.at_level(logging.WARNING, logger="server_min.notify"):
            assert asyncio.run(scenario()) == 12
        assert "cannot send a wake-up on fake bus (connection refused)" in caplog.text
    finally:
        notifier.close()


def test_a_bus_that_never_answers_fails_at_start_saying_why() -> None:
    bus = FakeBus(refuse=1_000_000)
    with pytest.raises(BusUnavailable, match="cannot listen on the wake-up bus fake bus: connection refused"):
        BusNotifier(bus, connect_timeout=0.3)
    assert bus.closed
