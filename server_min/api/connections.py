"""Connections that cannot starve the server: bounded request heads, head and body timeouts, and
as many open files as the system allows.

uvicorn's httptools protocol puts no limit on the size of a request head (a 100 MiB header was
accepted after 18 s) and starts no timer before the first request of a connection: a socket that
sends nothing, or half a head, stays open for ever. With 1,024 open files, 1,100 such sockets
starved everyone. GuardedHttp closes a connection whose head is over MAX_HEAD bytes (431) or is not
complete HEAD_TIMEOUT seconds after the connection opened or the previous response ended, and one
whose body stalls for BODY_TIMEOUT seconds while the server waits for it.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

MAX_HEAD = 64 << 10  # request line and headers together
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 60.0
KEEP_ALIVE = 20.0  # idle time allowed between two requests of a connection
FILES_RESERVE = 128  # open files kept for packs, the database and logs when connections are at the limit

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional for uvicorn: then serve() uses h11 with its own head limit
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def raise_open_files() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def uvicorn_options() -> dict[str, Any]:
    """uvicorn.run keyword arguments for the protocol, its limits and timeouts."""
    files = raise_open_files()
    options: dict[str, Any] = {
        "timeout_keep_alive": KEEP_ALIVE,
        "h11_max_incomplete_event_size": MAX_HEAD,
        # Past this many connections new requests get 503 at once, before the process runs out of files.
        "limit_concurrency": max(64, files - FILES_RESERVE),
    }
    options["http"] = GuardedHttp if GuardedHttp is not None else "h11"
    return options


if HttpToolsProtocol is not None:

    class GuardedHttp(HttpToolsProtocol):  # type: ignore[valid-type,misc]
        """uvicorn's httptools protocol with a bounded head and timers on the head and the body."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._head_bytes > MAX_HEAD and not self.transport.is_closing():
                self._refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            if self._head_timer is None:
                self._arm_head()

        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            if self._head_bytes <= MAX_HEAD:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            if self._head_bytes <= MAX_HEAD:
                super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._head_bytes > MAX_HEAD:
                return  # data_received answers 431 and closes
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().on_headers_complete()
            self._arm_body()

        def on_body(self, body: bytes) -> None:
            if self._head_bytes > MAX_HEAD:
                return
            super().on_body(body)
            self._arm_body()

        def on_message_complete(self) -> None:
            if self._head_bytes > MAX_HEAD:
                return
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            super().on_message_complete()

        def _arm_head(self) -> None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._close_idle)

        def _arm_body(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(BODY_TIMEOUT, self._body_stalled)

        def _close_idle(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def _body_stalled(self) -> None:
            self._body_timer = None
            if self.flow is not None and self.flow.read_paused:
                self._arm_body()  # the server is not reading yet: the client is not the one stalling
                return
            if not self.transport.is_closing():
                self.transport.close()

        def _refuse_head(self) -> None:
            message = b'{"error": "too_large", "message": "request head is over the limit"}'
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
                                 + message)
            self.transport.close()

        def _cancel(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None
else:
    GuardedHttp = None  # type: ignore[assignment,misc]


__all__ = ["GuardedHttp", "raise_open_files", "uvicorn_options"]
