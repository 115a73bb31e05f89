"""A fault-injecting TCP proxy on loopback, for tests of a client's retries.

    with FaultProxy(server.port, mode="reset", after_bytes=2 << 20, max_faults=5) as proxy:
        ...  # point the client at proxy.url
        proxy.arm()  # faults start now (set-up traffic before this passes untouched)
        ...
        proxy.release()  # no more faults, and stalls in progress end now
    proxy.stats  # connections, bytes, faults injected

It listens on a free 127.0.0.1 port and forwards every connection to the target. Modes:

- "reset":  a connection is cut with a TCP RST once it has carried `after_bytes` bytes
            (counted in `direction`: "up" = client to server, "down", or "both").
- "stall":  once a connection has carried `after_bytes`, nothing moves either way for
            `stall_seconds`, then forwarding resumes (a slow or hung server).
- "close":  every forwarded piece may end the connection (FIN both ways, mid-message) with
            probability `probability`.
- "none":   a plain pass-through (counts bytes only).

For "reset" and "stall", `probability` is the chance that a new connection is armed at all.
Faults are bounded: at most `max_faults` in all, only within `window` seconds of `arm()`, and
the proxy stops by itself after `lifetime` seconds. A seeded RNG makes a run repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PIECE = 64 << 10
MODES = ("none", "reset", "stall", "close")


@dataclass
class ProxyStats:
    """What went through the proxy and what it broke."""

    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    resets: int = 0
    stalls: int = 0
    closes: int = 0
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (time since arm, kind, conn bytes)

    @property
    def faults(self) -> int:
        return self.resets + self.stalls + self.closes


class _Conn:
    def __init__(self, armed: bool) -> None:
        self.armed = armed
        self.up = 0
        self.down = 0
        self.fired = False
        self.resume_at = 0.0
        self.writers: list[asyncio.StreamWriter] = []


class FaultProxy:
    """A loopback TCP proxy to 127.0.0.1:`target_port` that injects bounded faults."""

    def __init__(self, target_port: int, *, mode: str = "none", after_bytes: int = 1 << 20,
                 direction: str = "both", stall_seconds: float = 3.0, probability: float = 1.0,
                 max_faults: int = 5, window: float = 60.0, lifetime: float = 600.0, seed: int = 0,
                 target_host: str = "127.0.0.1") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if direction not in ("up", "down", "both"):
            raise ValueError(f"unknown direction {direction!r}")
        self.target = (target_host, target_port)
        self.mode = mode
        self.after_bytes = after_bytes
        self.direction = direction
        self.stall_seconds = stall_seconds
        self.probability = probability
        self.max_faults = max_faults
        self.window = window
        self.lifetime = lifetime
        self.rng = random.Random(seed)
        self.stats = ProxyStats()
        self.armed_at: float | None = None
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._conns: set[_Conn] = set()

    # --- control (from the test's thread) -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError("the fault proxy did not start")
        return self

    def arm(self, **changes: Any) -> None:
        """Start injecting faults now (optionally changing settings first); the window starts now."""
        with self._lock:
            for key, value in changes.items():
                if not hasattr(self, key):
                    raise AttributeError(key)
                setattr(self, key, value)
            self.armed_at = time.monotonic()

    def disarm(self) -> None:
        with self._lock:
            self.armed_at = None

    def release(self) -> None:
        """Disarm, and end every stall in progress now (a test holds a transfer until an event, not a time)."""
        with self._lock:
            self.armed_at = None
            for conn in list(self._conns):
                conn.resume_at = 0.0

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the proxy (on its own thread and event loop) -------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
            pending = asyncio.all_tasks(loop)  # connections still open: end them inside the loop
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=10))
        finally:
            loop.close()
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lifetime)  # stops by itself at the latest here
        finally:
            server.close()
            for conn in list(self._conns):
                for writer in conn.writers:
                    writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def _may_fault(self) -> bool:
        """Faults are on (armed, inside the window, under the count); the caller holds the lock."""
        if self.mode == "none" or self.armed_at is None:
            return False
        if time.monotonic() - self.armed_at > self.window:
            return False
        return self.stats.faults < self.max_faults

    def _record(self, kind: str, conn: _Conn) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        since = time.monotonic() - (self.armed_at or time.monotonic())
        self.stats.events.append((round(since, 3), kind, conn.up + conn.down))

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            self.stats.connections += 1
            armed = self.mode in ("reset", "stall") and self.rng.random() < self.probability
        conn = _Conn(armed)
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            return
        conn.writers = [client_w, server_w]
        self._conns.add(conn)
        up = asyncio.ensure_future(self._pump(conn, client_r, server_w, "up"))
        down = asyncio.ensure_future(self._pump(conn, server_r, client_w, "down"))
        try:
            await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait([up, down], timeout=30)  # one side finished: let the other drain briefly
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            for task in (up, down):
                task.cancel()
            for writer in conn.writers:
                with contextlib.suppress(Exception):
                    writer.close()
            self._conns.discard(conn)

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    way: str) -> None:
        try:
            while True:
                data = await reader.read(PIECE)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                action = self._account(conn, way, len(data))
                while conn.resume_at > time.monotonic():  # a stall holds both directions
                    await asyncio.sleep(min(0.05, conn.resume_at - time.monotonic()))
                if action == "reset":
                    self._reset(conn)
                    return
                if action == "close":
                    for w in conn.writers:
                        w.close()
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            for w in conn.writers:
                w.transport.abort()

    def _account(self, conn: _Conn, way: str, n: int) -> str | None:
        """Count `n` bytes going `way`; the fault to inject before forwarding them, if any."""
        with self._lock:
            if way == "up":
                conn.up += n
                self.stats.bytes_up += n
            else:
                conn.down += n
                self.stats.bytes_down += n
            if not self._may_fault():
                return None
            if self.mode == "close":
                if self.rng.random() < self.probability:
                    self._record("closes", conn)
                    return "close"
                return None
            if not conn.armed or conn.fired:
                return None
            carried = {"up": conn.up, "down": conn.down, "both": conn.up + conn.down}[self.direction]
            if carried < self.after_bytes:
                return None
            conn.fired = True
            if self.mode == "reset":
                self._record("resets", conn)
                return "reset"
            self._record("stalls", conn)
            conn.resume_at = time.monotonic() + self.stall_seconds
            return None

    @staticmethod
    def _reset(conn: _Conn) -> None:
        """Abort both sockets with SO_LINGER 0: the peers see a TCP RST, not a clean close."""
        for w in conn.writers:
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
