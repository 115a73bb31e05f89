"""Request body limits that hold even without a Content-Length header (chunked uploads).

This pure ASGI middleware refuses a declared Content-Length over the route's limit (or one that is
not a plain number), counts the bytes of bodies sent without one, and gives small routes (login,
sharing, links) a small limit of their own. JSON bodies get an ordinary limit of 1 MiB, block lookups
8 MiB (100,000 hashes), and only commits and stages of a caller that gate.AuthGate found may write
the box get the large one (the gate, which runs first, sets it in the request's state). Over the
limit, the answer is 413 with a JSON body and the app never sees the request. Being pure ASGI, it
passes the bodies of accepted requests through untouched: the block uploads (tens of MiB each) are
not copied or wrapped on their way.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# These routes read their (binary) body themselves, in pieces, and enforce their own limit.
STREAMED = (("POST", "/v1/blocks/pack"), ("PUT", "/v1/blocks/"))
JSON_LIMIT = 1 << 20  # any JSON body but a commit's: far below what parsing it costs in memory (x25)
LOOKUP_LIMIT = 8 << 20  # /v1/blocks/missing, fetch, signatures: 100,000 hashes


class BodyLimit:
    """Buffer and count request bodies that come without a Content-Length; 413 past the limit."""

    def __init__(self, app: ASGIApp, small_limit: int, small_prefixes: tuple[str, ...] = (),
                 small_suffixes: tuple[str, ...] = (), json_limit: int = JSON_LIMIT,
                 blocks_limit: int = 80 << 20, lookup_limit: int = LOOKUP_LIMIT) -> None:
        self.app = app
        self.small_limit = small_limit
        self.small_prefixes = small_prefixes
        self.small_suffixes = small_suffixes
        self.json_limit = json_limit
        self.blocks_limit = blocks_limit
        self.lookup_limit = lookup_limit

    def limit_for(self, method: str, path: str, granted: int | None = None) -> int | None:
        """The limit of a route, or None for routes that stream their body themselves; `granted` is the
        large limit the gate gave a caller who may commit to the box."""
        if path.startswith(self.small_prefixes) or (path.startswith("/v1/boxes/") and path.endswith(
                self.small_suffixes)):
            return self.small_limit
        if any(method == m and (path == p or (p.endswith("/") and path.startswith(p))) for m, p in STREAMED):
            return None
        if granted is not None:
            return granted
        return self.lookup_limit if path.startswith("/v1/blocks/") else self.json_limit

    def declared_limit(self, method: str, path: str, granted: int | None = None) -> int:
        """The most a declared Content-Length may say on a route (streamed routes included)."""
        limit = self.limit_for(method, path, granted)
        return self.blocks_limit if limit is None else limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        granted = scope.get("state", {}).get("body_limit")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            limit = self.declared_limit(method, path, granted)
            if not (length.isascii() and length.isdigit()) or int(length) > limit:
                await _too_large(send, limit)
                return
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(method, path, granted)
        if method in ("GET", "HEAD", "OPTIONS") or limit is None:
            await self.app(scope, receive, send)
            return
        # No Content-Length: read the body here, counting, then hand the app a replay of it.
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(send, limit)
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body: dict[str, Any] = {"error": "too_large", "message": f"request body is over the limit of {limit} bytes"}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
