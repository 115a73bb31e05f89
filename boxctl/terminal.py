"""Human output that names and messages from the network cannot use to drive the terminal.

A file name, commit message or device name comes from other users and from the server: printed raw,
`ESC ] 2 ;` would set the terminal's title and `ESC [ 2K` erase lines. Human output shows every
control character escaped (`\\x1b`); `--json` output stays exact.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

# C0 controls, DEL and the C1 controls (a terminal takes 0x9b as ESC [), plus the bidirectional
# overrides that make a name read backwards.
_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_ESCAPES.update({c: f"\\u{c:04x}" for c in [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]})


def printable(text: str) -> str:
    """`text` with every control character shown as an escape, so it prints as one inert line."""
    return text.translate(_ESCAPES)


class SafeConsole(Console):
    """A rich Console whose print() escapes control characters in the strings it is given.

    Other renderables (a progress bar's own control codes) pass unchanged: only text we were handed is
    escaped, and every caller prints with markup=False, so brackets in names print as they are.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)


def console(stderr: bool = False) -> SafeConsole:
    """The console every command prints through (stdout, or stderr for notes and errors)."""
    return SafeConsole(stderr=stderr, highlight=False, soft_wrap=True)
