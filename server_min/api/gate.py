"""Who may send a body: the token (and, for big commit bodies, the right to write the box) is checked
before a single byte of the body is read.

FastAPI reads and parses a JSON body before it runs the dependency that checks the token, so without
this a request with no token at all made the server hold and parse up to the JSON limit (a 64 MiB
body cost 1.67 GB of memory before its 401). This pure ASGI middleware runs first: a request that
carries a body, on any API route but login, must carry a valid token or is answered 401 at once (and
the connection closed, its body unread). Only a caller who may write the box gets the large limit of
commit and stage bodies (limits.BodyLimit reads it from the request's state); everyone else gets the
ordinary small one. The caller found is kept in the request's state, so the route does not look the
token up again.
"""

from __future__ import annotations

import json
import re
from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from server_min.errors import ServerError
from server_min.service import Caller, Service

PUBLIC = ("/v1/login",)  # routes that take a body from callers who have no token yet
WITHOUT_BODY = ("GET", "HEAD", "OPTIONS")
BIG_ROUTES = re.compile(r"^/v1/boxes/(\d{1,18})/(?:commits|stages/\d{1,18})$")


class AuthGate:
    """Authenticate every API request that carries a body before anything reads it."""

    def __init__(self, app: ASGIApp, service: Service, big_limit: int) -> None:
        self.app = app
        self.service = service
        self.big_limit = big_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in WITHOUT_BODY or not scope["path"].startswith("/v1/") \
                or scope["path"] in PUBLIC:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        try:
            caller: Caller = await to_thread.run_sync(self.service.authenticate, token)
            state = scope.setdefault("state", {})
            state["caller"] = caller
            big = BIG_ROUTES.match(scope["path"])
            if big is not None:
                await to_thread.run_sync(lambda: self.service.access(caller, int(big.group(1)), write=True))
                state["body_limit"] = self.big_limit
        except ServerError as exc:
            await _refuse(send, exc.status, exc.body())
            return
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
    return None


async def _refuse(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"connection", b"close")]  # the body was never read: this connection cannot carry another request
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


__all__ = ["AuthGate"]
