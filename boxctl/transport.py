"""The HTTP client: one pooled session per server, retries with backoff and jitter, a bandwidth limit
and byte counts. It knows no routes: boxctl.api names them.

Errors come back as BoxError subclasses; nothing above this module sees `requests`.
"""

from __future__ import annotations

import email.utils
import json as jsonlib  # `json` is the name of request()'s body argument
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from box_common.frames import HEADER, MAX_BLOCK, Frame, FrameError
from boxctl.config import tls_trust
from boxctl.errors import (
    AuthError,
    BoxError,
    IntegrityError,
    NetworkError,
    NotFound,
    PushRejected,
    ServerRefused,
    UsageError,
)

RETRY_STATUSES = {429, 500, 502, 503, 504}
PIECE = 64 << 10
SENT_PIECE = 1 << 20  # without a bandwidth limit, the step at which a body's progress is counted
# The most one answer read whole may hold (a JSON page, a tree, an error, a block): a hostile server could
# otherwise send an endless body into memory. A change page of 20,000 entries is a few MiB; a tree of a box
# of 1,000,000 files about 350 MiB, so `tree` may ask for more (see Api.tree).
MAX_ANSWER = 64 << 20


class RateLimiter:
    """A token bucket shared by every thread of a transfer: `--bwlimit` in bytes per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def spend(self, n: int) -> None:
        """Wait until `n` more bytes fit in the budget."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
        if start > now:
            time.sleep(start - now)


def parse_rate(text: str) -> float | None:
    """rsync-style --bwlimit: a number of KiB/s, or with a K, M or G suffix; 0 means no limit."""
    value = text.strip().upper().removesuffix("B").removesuffix("/S")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(value[-1:], 1 << 10)
    number = value[:-1] if value[-1:] in "KMG" else value
    try:
        rate = float(number) * scale
    except ValueError:
        raise UsageError(f"cannot read the rate {text!r}: use e.g. 500 (KiB/s), 2M or 1G") from None
    if rate < 0:
        raise UsageError("--bwlimit must not be negative")
    return rate or None


class Transport:
    """Calls to one server as one user; safe to share between threads."""

    def __init__(self, server: str, token: str | None, *, timeout: float = 60.0, retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0, pool: int = 16,
                 bwlimit: float | None = None, stop: threading.Event | None = None,
                 verify: str | bool | None = None) -> None:
        self.server = server
        self.stop = stop  # set by `watch` on SIGTERM: a retry's wait ends at once
        self.limiter = RateLimiter(bwlimit) if bwlimit else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Passed with every request: a session's own setting loses to $REQUESTS_CA_BUNDLE in requests.
        self.verify = tls_trust(server) if verify is None else verify
        if token is not None:  # None: a call that authenticates by other means (a password login)
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = "boxctl/0.1"
        self.sent_bytes = 0
        self.received_bytes = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def _count(self, sent: int, received: int) -> None:
        with self._lock:
            self.sent_bytes += sent
            self.received_bytes += received

    def request(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                stream: bool = False, idempotent: bool = True, timeout: float | None = None,
                max_bytes: int = MAX_ANSWER) -> requests.Response:
        """Send a request, retrying connection errors, 429 and 5xx with exponential backoff and jitter.

        Unless `stream`, the answer's body is read here, at most `max_bytes` of it (else ServerRefused)."""
        url = f"{self.server}/v1{path}"
        if json is not None:
            data, headers = _encoded(json), {**(headers or {}), "Content-Type": "application/json"}
        attempt = 0
        while True:
            try:
                # No redirects: one to plain HTTP (or another host) would carry the token or the body there.
                response = self.session.request(
                    method, url, data=data, params=params, headers=headers, stream=True,
                    timeout=(10.0, timeout or self.timeout), allow_redirects=False, verify=self.verify,
                )
                if not stream:
                    _read_capped(response, max_bytes)
            except requests.exceptions.SSLError as exc:
                raise NetworkError(f"cannot verify {self.server}'s certificate ({_reason(exc)}); for a private "
                                   "CA, pass --ca-cert FILE (or set BOX_CA_CERT)") from None
            except requests.exceptions.ConnectionError as exc:
                # A refused or reset connection before an answer: safe to retry when idempotent or unsent.
                if attempt >= self.retries or not (idempotent or _not_sent(exc)):
                    raise NetworkError(f"cannot reach {self.server}: {_reason(exc)}; is the server running?") from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            except requests.exceptions.Timeout:
                if attempt >= self.retries or not idempotent:
                    raise NetworkError(f"{self.server} did not answer in time; try again later") from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            except requests.exceptions.RequestException as exc:
                raise NetworkError(f"request to {self.server} failed: {exc}") from None
            if response.status_code in RETRY_STATUSES and attempt < self.retries and idempotent \
                    and not _final(response):
                retry_after = response.headers.get("Retry-After")
                response.close()
                self._sleep(attempt, retry_after)
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _error_for(response)
            if 300 <= response.status_code < 400:
                where = response.headers.get("Location", "elsewhere")
                response.close()
                raise ServerRefused(f"{self.server} redirects to {where}; boxctl does not follow redirects "
                                    "(they could send your token elsewhere): use the final address")
            return response

    def pause(self, attempt: int) -> None:
        """Back off before retry number `attempt` of something the caller repeats itself."""
        self._sleep(attempt, None)

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * (2**attempt))
        delay = random.uniform(delay / 2, delay)  # jitter: clients that failed together retry apart
        if retry_after:
            delay = max(delay, _parse_retry_after(retry_after))
        delay = min(delay, self.max_backoff)
        if self.stop is None:
            time.sleep(delay)
        elif self.stop.wait(delay):
            raise NetworkError("stopped while waiting to retry")

    def get_json(self, route: str, *, max_bytes: int = MAX_ANSWER, **params: Any) -> Any:
        """GET `route` with the params that are not None; its JSON answer (at most `max_bytes` of it)."""
        response = self.request("GET", route, params={k: v for k, v in params.items() if v is not None},
                                max_bytes=max_bytes)
        self._count(0, len(response.content))
        return _parsed(response)

    def delete_json(self, route: str, **params: Any) -> Any:
        """DELETE `route` (idempotent: retried like a GET) and return its JSON answer."""
        response = self.request("DELETE", route, params={k: v for k, v in params.items() if v is not None})
        self._count(0, len(response.content))
        return _parsed(response)

    def get_bytes(self, route: str, **params: Any) -> bytes:
        """GET `route`; its body as bytes."""
        response = self.request("GET", route, params={k: v for k, v in params.items() if v is not None})
        self._count(0, len(response.content))
        return response.content

    def post_bytes(self, route: str, body: Any, **params: Any) -> bytes:
        """POST `body` as JSON (retried: idempotent); the answer's body as bytes."""
        response = self.request("POST", route, json=body, params=params or None)
        self._count(len(response.request.body or b""), len(response.content))
        return response.content

    def post_json(self, route: str, body: Any, idempotent: bool = True) -> Any:
        """POST `body` as JSON; its JSON answer (`idempotent=False`: not resent once it may have arrived)."""
        response = self.request("POST", route, json=body, idempotent=idempotent)
        self._count(len(response.request.body or b""), len(response.content))
        return _parsed(response)

    # --- frames: block bodies (the routes that carry them are named by boxctl.api) ----------------

    def post_frames(self, route: str, body: bytes | Sequence[bytes | memoryview],
                    on_sent: Callable[[int], None] | None = None) -> Any:
        """POST a body of frames (retried: the routes that take one are idempotent); its JSON answer.

        `body` may be a list of buffers (see box_common.frames.frame_parts): they are sent one after
        another, as one request with a Content-Length, without being joined into a copy first.
        `on_sent(n)` is told, as the body goes out, how many of its bytes have been handed to the network
        (paced by --bwlimit); a retry starts again from 0.
        """
        parts = [body] if isinstance(body, bytes | bytearray | memoryview) else list(body)
        data = _Parts(parts, self.limiter, on_sent)
        headers = {"Content-Type": "application/x-box-frames"}
        response = self.request("POST", route, data=data, headers=headers)
        self._count(len(data), len(response.content))
        return _parsed(response)

    def stream_frames(self, route: str, body: Any, count: int) -> Iterator[Frame]:
        """POST `body` and read `count` frames from the answer as they arrive (the caller verifies each)."""
        response = self.request("POST", route, json=body, stream=True)
        try:
            raw = response.raw
            for _ in range(count):
                header = _read_exact(raw, HEADER.size)
                digest, codec, length = HEADER.unpack(header)
                if length > MAX_BLOCK + 1024:  # never buffer what no block can be
                    raise FrameError(f"the server sent a frame of {length} bytes, over the block limit")
                payload = _read_exact(raw, length, self.limiter)
                self._count(0, HEADER.size + length)
                yield Frame(digest.hex(), codec, payload)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, FrameError, OSError) as exc:
            raise NetworkError(f"download from {self.server} broke off: {_reason(exc)}") from None
        finally:
            response.close()


class _Parts:
    """A request body made of buffers: its length up front (so a Content-Length, not chunked encoding),
    then each buffer as is, or in paced pieces under --bwlimit (or in pieces of a MiB when someone counts
    what was sent); iterable again for a retry."""

    def __init__(self, parts: list[bytes | bytearray | memoryview], limiter: RateLimiter | None,
                 on_sent: Callable[[int], None] | None = None) -> None:
        self.parts = [memoryview(p).cast("B") for p in parts]
        self.size = sum(p.nbytes for p in self.parts)
        self.limiter = limiter
        self.on_sent = on_sent

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes | memoryview]:
        step = PIECE if self.limiter is not None else SENT_PIECE if self.on_sent is not None else 0
        sent = 0
        for part in self.parts:
            if not step:
                yield part
                continue
            for start in range(0, len(part), step):
                piece = part[start : start + step]
                if self.limiter is not None:
                    self.limiter.spend(len(piece))
                yield piece
                # Back here once the HTTP client asks for the next piece: this one went to the socket.
                sent += len(piece)
                if self.on_sent is not None:
                    self.on_sent(sent)


def _read_exact(raw: Any, size: int, limiter: RateLimiter | None = None) -> bytes:
    parts = []
    remaining = size
    while remaining:
        if limiter is not None:
            limiter.spend(min(remaining, PIECE))
        part = raw.read(min(remaining, PIECE) if limiter is not None else remaining)
        if not part:
            raise FrameError("the server closed the download early")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _not_sent(exc: Exception) -> bool:
    text = str(exc)
    return "Connection refused" in text or "NewConnectionError" in text or "Failed to establish" in text


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    return text.split("(Caused by", 1)[0].strip()[:200] or type(exc).__name__


def _read_capped(response: requests.Response, limit: int) -> None:
    """Read the body of `response` (kept as its `content`), refusing one over `limit` bytes before more of
    it is held: whatever its Content-Length says, no more than `limit` + one piece is ever read."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        response.close()
        raise ServerRefused(f"the server's answer of {int(declared):,} bytes is over the {limit:,} bytes "
                            f"boxctl accepts; stopped (is {response.url.split('?')[0]} a Box server?)")
    body = bytearray()
    for piece in response.iter_content(PIECE):  # a broken answer raises here, retried like a failed request
        body += piece
        if len(body) > limit:
            response.close()
            raise ServerRefused(f"the server's answer goes on past the {limit:,} bytes boxctl accepts; "
                                f"stopped (is {response.url.split('?')[0]} a Box server?)")
    response._content = bytes(body)  # what `.content` and `.json()` then return
    response._content_consumed = True


def _encoded(value: Any) -> bytes:
    """A request body: compact UTF-8 JSON."""
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _parsed(response: requests.Response) -> Any:
    """A JSON answer's value."""
    try:
        return jsonlib.loads(response.content)
    except ValueError:  # (json.JSONDecodeError, and bytes that are not UTF-8)
        status = response.status_code
        raise BoxError(f"the server's answer ({status}) is not JSON; is {response.url} a Box server?") from None


def _parse_retry_after(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else 0.0


def _final(response: requests.Response) -> bool:
    """A 5xx that says what is wrong (a damaged block, a full disk) is not transient: no retry."""
    if response.headers.get("Content-Type", "").split(";")[0] != "application/json":
        return False
    try:
        return jsonlib.loads(response.content).get("error") in ("damaged", "out_of_space")
    except (ValueError, AttributeError):
        return False


def _error_for(response: requests.Response) -> BoxError:
    try:
        body = response.json()
        message = str(body.get("message") or body.get("detail") or response.reason)
    except ValueError:
        body, message = {}, f"{response.status_code} {response.reason}"
    status = response.status_code
    if status == 401:
        return AuthError(f"the server refused your token ({message}); log in again with 'boxctl login'")
    if status == 403:
        return AuthError(message)
    if status == 404:
        return NotFound(message, missing=body.get("missing"))  # "box": the box itself (see session.box_named)
    if status == 409:
        return PushRejected(message, conflicts=body.get("conflicts", []))
    if body.get("error") == "damaged":
        return IntegrityError(f"data damaged on the server: {message}", blocks=body.get("blocks", []))
    if status == 507 or body.get("error") == "out_of_space":
        return ServerRefused(f"the server is out of space: {message}; ask its operator to free some")
    if status in (400, 413, 422):
        return ServerRefused(f"the server refused the request: {message}")
    return ServerRefused(f"server error {status}: {message}")
