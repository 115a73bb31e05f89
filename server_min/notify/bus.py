"""A notifier for several server processes over a shared bus (notify.postgres, notify.redis).

Each process keeps its own waiters (notify.local) and one listening connection, held by a background
thread. A publish goes out on the bus only; every process, the publisher too, wakes its waiters when
the message comes back, so a commit wakes the long polls of every process by the same path.

The bus only wakes: the journal and each device's cursor are the durable queue. So when the listening
connection is lost, the thread reconnects with backoff and, once it listens again, wakes every local
waiter with LOOK_AGAIN to re-read the head: a message sent while no one listened is then not missed.
A publish that cannot be sent wakes this process's waiters directly, and the others re-check within
wakeups.RECHECK at worst.

Messages are `b:<box_id>:<head>` and `k:<user_id>` on one channel per deployment; anything else is
ignored with a log line.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from server_min.notify.local import LocalWaiter, LocalWaiters

log = logging.getLogger("server_min.notify")

DEFAULT_CHANNEL = "box_wake"
FIRST_BACKOFF = 0.05  # seconds before the first reconnection attempt; doubles up to MAX_BACKOFF
MAX_BACKOFF = 5.0
POLL = 0.1  # how often a listener looks at its stop flag between messages (bounds close())

_BOX = re.compile(r"b:(\d{1,18}):(\d{1,18})")
_USER = re.compile(r"k:(\d{1,18})")


class BusUnavailable(ConnectionError):
    """The bus could not be reached when the notifier started; the message is one line for the operator."""


class Bus(Protocol):
    """One kind of shared bus: sends from any thread, and one listening connection at a time."""

    where: str  # the bus for log lines and errors, without credentials
    name: str  # the listening connection's name as the server lists it (application_name, CLIENT SETNAME)

    def send(self, payload: str) -> None:
        """Send `payload` to every listener, this process's too; raises when it cannot. Any thread."""
        ...

    def listen(self, deliver: Callable[[str], None], listening: Callable[[], None],
               stop: threading.Event) -> None:
        """Open a listening connection and hold it: call `listening` each time it (re)subscribes and
        `deliver` for each payload. Return once `stop` is set (within POLL); raise when the connection fails."""
        ...

    def close(self) -> None:
        """Release the sending side."""
        ...


def one_line(exc: BaseException | None) -> str:
    """A driver's error message on one line (libpq's span several)."""
    return " ".join(str(exc).split()) if exc is not None else ""


def box_payload(box_id: int, head: int) -> str:
    return f"b:{box_id}:{head}"


def user_payload(user_id: int) -> str:
    return f"k:{user_id}"


class BusNotifier:
    """The Notifier over a Bus: local waiters, a listener thread, reconnection and its look-again wake-up."""

    def __init__(self, bus: Bus, connect_timeout: float = 10.0) -> None:
        """Start listening; BusUnavailable if the bus does not answer within `connect_timeout` seconds,
        so that a wrong URL fails at start rather than leaving long polls to their re-check timer."""
        self.local = LocalWaiters()
        self.bus = bus
        self.reconnects = 0  # connections after the first (for logs and tests)
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._was_up = False  # whether the current connection got to listen
        self._thread = threading.Thread(target=self._run, name="box-notify-listener", daemon=True)
        self._thread.start()
        if not self._listening.wait(connect_timeout):
            error = self._error
            self.close()
            raise BusUnavailable(f"cannot listen on the wake-up bus {bus.where}: {one_line(error) or 'no answer'}")

    def waiter(self, box_id: int, user_id: int) -> AbstractContextManager[LocalWaiter]:
        return self.local.waiter(box_id, user_id)

    def waiting(self) -> int:
        return self.local.waiting()

    def publish(self, box_id: int, head: int) -> None:
        self._send(box_payload(box_id, head), lambda: self.local.wake_box(box_id, head))

    def kick_user(self, user_id: int) -> None:
        self._send(user_payload(user_id), lambda: self.local.wake_user(user_id))

    def close(self) -> None:
        """Stop the listener (within POLL seconds) and release the bus's connections."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.bus.close()

    def _send(self, payload: str, locally: Callable[[], None]) -> None:
        try:
            self.bus.send(payload)
        except Exception as exc:  # the commit is done: its wake-up must not turn it into an error
            log.warning("cannot send a wake-up on %s (%s); waking this process only", self.bus.where, exc)
            locally()

    def _run(self) -> None:
        """The listener thread: listen, and after a failure wait (doubling, with jitter) and listen again."""
        delay = FIRST_BACKOFF
        while not self._stop.is_set():
            self._was_up = False
            try:
                self.bus.listen(self._deliver, self._on_listening, self._stop)
            except Exception as exc:  # any failure of the connection: each bus's driver raises its own errors
                self._error = exc
                if self._was_up:  # it was listening: start the backoff again, and say so once
                    delay = FIRST_BACKOFF
                    log.warning("lost the wake-up bus %s (%s); reconnecting", self.bus.where, one_line(exc))
                else:
                    log.debug("cannot reach the wake-up bus %s (%s); retrying", self.bus.where, exc)
                self._stop.wait(delay * random.uniform(0.5, 1.0))
                delay = min(MAX_BACKOFF, delay * 2)

    def _on_listening(self) -> None:
        """The connection listens (again): whatever was sent while it did not, look again."""
        if self._listening.is_set():
            self.reconnects += 1
            log.info("listening again on the wake-up bus %s", self.bus.where)
        self._was_up = True
        self._listening.set()
        self.local.wake_all()

    def _deliver(self, payload: str) -> None:
        if match := _BOX.fullmatch(payload):
            self.local.wake_box(int(match[1]), int(match[2]))
        elif match := _USER.fullmatch(payload):
            self.local.wake_user(int(match[1]))
        else:
            log.warning("ignoring a bad wake-up message on %s: %r", self.bus.where, payload[:100])


__all__ = ["DEFAULT_CHANNEL", "Bus", "BusNotifier", "BusUnavailable", "box_payload", "user_payload"]
