"""Running a function in a forked child process and reading back its result.

Used to spread system-call-bound work (a stat of every file in a big tree) over the cores, where
threads would only queue on the interpreter lock and end up slower than one.
"""

from __future__ import annotations

import marshal
import os
import sys
import threading
from collections.abc import Callable
from typing import Any


class ForkFailed(Exception):
    """The child ended without a result (it raised, or was killed)."""


def can_fork() -> bool:
    """True where a plain fork is safe: Linux, and no other thread that could hold a lock the child needs."""
    return sys.platform == "linux" and threading.active_count() == 1


class Forked:
    """`fn()` running in a child process; `result()` waits for its value (anything marshal can carry)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code, whatever happens
            code = 1
            try:
                os.close(read)
                data = marshal.dumps(fn())
                with os.fdopen(write, "wb") as out:
                    out.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self.fd = pid, read

    def result(self) -> Any:
        """The child's value; ForkFailed if it ended without one."""
        try:
            with os.fdopen(self.fd, "rb") as source:
                data = source.read()
        finally:
            _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise ForkFailed(f"the child process ended with {code}")
        try:
            return marshal.loads(data)
        except (EOFError, ValueError, TypeError) as exc:
            raise ForkFailed(f"the child process sent an unreadable result: {exc}") from None
