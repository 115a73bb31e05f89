"""Passwords read from the terminal, or from stdin when it is not one (scripts pipe them in)."""

from __future__ import annotations

import getpass
import sys

from boxctl.errors import UsageError


def read_password(prompt: str, confirm: bool) -> str:
    """A password from the terminal (asked twice when `confirm`), or one line of stdin when not a tty."""
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ; nothing was changed")
        password = first
    else:
        password = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
    if not password:
        raise UsageError("no password given: type it, pipe it on stdin, or log in with --token TOKEN")
    return password
