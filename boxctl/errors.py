"""The client's exception hierarchy: every error carries a one-line message and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BoxError(Exception):
    """Base of every error the CLI reports; `exit_code` is what the process exits with."""

    exit_code = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UsageError(BoxError):
    """The command was called wrongly (bad option value, bad path)."""

    exit_code = 2


class AuthError(BoxError):
    """No credentials, or the server refused them (HTTP 401/403)."""

    exit_code = 3


class PushRejected(BoxError):
    """The remote moved on for some of the same paths: pull first."""

    exit_code = 4


class NotABox(BoxError):
    """The folder is not a synced folder (no .box/), or its config is unreadable."""

    exit_code = 5


class NetworkError(BoxError):
    """The server could not be reached, even after retries."""

    exit_code = 6


class NotFound(BoxError):
    """A box, path, revision or block that does not exist (or that you cannot see)."""

    exit_code = 7


class ServerRefused(BoxError):
    """The server answered with an error other than the ones above."""

    exit_code = 8


class IntegrityError(BoxError):
    """Data failed its checksum: a block damaged on the server, or a damaged local index or file."""

    exit_code = 9


REPAIR_HINT = "boxctl check --repair"


class IndexDamaged(IntegrityError):
    """The index database is damaged (overwritten, truncated, not a database): every command stops with
    one line naming the command that rebuilds it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"the index {path} is damaged ({reason}); rebuild it with '{REPAIR_HINT}' "
                         "(no local edit is lost)", path=str(path), reason=reason)
        self.reason = reason
