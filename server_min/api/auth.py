"""Who is calling: the bearer token of a request, turned into a Caller by the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server_min.service import Caller

bearer = HTTPBearer(auto_error=False)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def current_caller(request: Request, creds: Credentials) -> Caller:
    """The user behind the request's bearer token (401 when missing, wrong or revoked)."""
    known = getattr(request.state, "caller", None)  # found by gate.AuthGate already, before the body was read
    if known is not None:
        return known
    return request.app.state.service.authenticate(creds.credentials if creds else None)


Auth = Annotated[Caller, Depends(current_caller)]

__all__ = ["Auth", "Credentials", "bearer", "current_caller"]
