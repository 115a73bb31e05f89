"""The server's exception hierarchy: each error knows its HTTP status and a message for the client."""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base of every error the server answers with; `status` is the HTTP status, `code` a stable name."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON body sent to the client."""
        return {"error": self.code, "message": self.message, **self.details}


class BadRequest(ServerError):
    status = 400
    code = "bad_request"


class Unauthorized(ServerError):
    status = 401
    code = "unauthorized"


class Forbidden(ServerError):
    status = 403
    code = "forbidden"


class NotFound(ServerError):
    status = 404
    code = "not_found"


class Conflict(ServerError):
    status = 409
    code = "conflict"


class TooLarge(ServerError):
    status = 413
    code = "too_large"


class Unprocessable(ServerError):
    status = 422
    code = "invalid"


class Damaged(ServerError):
    """A stored block failed its SHA-256 check (or its pack is cut short or gone): never retried."""

    status = 500
    code = "damaged"


class Unavailable(ServerError):
    """A store the server needs does not answer now (its connection is lost, it is restarting): retried."""

    status = 503
    code = "unavailable"
    retry_after = 2


class OutOfSpace(ServerError):
    """The server's disk is full: the upload was dropped and its bytes freed; not transient."""

    status = 507
    code = "out_of_space"
