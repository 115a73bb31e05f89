"""What commands print: the `--json` documents on stdout, and the one printer of human output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from boxctl.terminal import SafeConsole, console

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def emit_json(data: Any) -> None:
    """Write `data` as indented JSON (UTF-8) and a newline; dates, dataclasses and other objects as str()."""
    document = (json.dumps(data, default=str, indent=2, ensure_ascii=False) + "\n").encode()
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:  # a text-only stream (some test runners): the same document as text
        sys.stdout.write(document.decode())
        return
    sys.stdout.flush()  # whatever was written as text goes first
    stream.write(document)
    stream.flush()


_consoles: dict[bool, SafeConsole] = {}


def _console(stderr: bool) -> SafeConsole:
    if stderr not in _consoles:
        _consoles[stderr] = console(stderr=stderr)
    return _consoles[stderr]


class Printer:
    """Human output of one command: lines on stdout (none when quiet), notes and errors on stderr.

    Every string goes through the safe console (control characters from the network shown escaped)
    and without rich markup, so brackets in names print as they are.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    @property
    def out(self) -> SafeConsole:
        return _console(False)

    @property
    def err(self) -> SafeConsole:
        return _console(True)

    def say(self, message: str) -> None:
        """A line of the command's report on stdout, unless quiet."""
        if not self.quiet:
            self.out.print(message, markup=False)

    def warn(self, message: str) -> None:
        """A line on stderr, even when quiet: something left undone, a refusal, an error."""
        self.err.print(message, markup=False)

    def status(self, message: str) -> None:
        """A passing note on stderr, unless quiet (what `watch` is doing now)."""
        if not self.quiet:
            self.err.print(message, markup=False)

    def json(self, data: Any) -> None:
        """The `--json` document."""
        emit_json(data)

    def raw(self, data: bytes) -> None:
        """Bytes on stdout exactly as they are, even when quiet: a file's content (`cat`), a patch to pipe."""
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:  # a text-only stream (some test runners)
            sys.stdout.write(data.decode("utf-8", "replace"))
            return
        sys.stdout.flush()  # whatever was written as text goes first
        stream.write(data)

    @contextmanager
    def progress(self, enabled: bool) -> Iterator[Progress | None]:
        """A progress bar on a terminal; None when piped, quiet or in --json mode."""
        if not enabled or self.quiet or not self.err.is_terminal:
            yield None
            return
        # Imported here: most runs (piped, cron, --json) never draw a bar, and the import costs startup time.
        from boxctl.progress_bar import make_bar

        with make_bar(self.err) as bar:
            tasks: dict[str, Any] = {}

            def update(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total or None)
                bar.update(tasks[phase], completed=done, total=total or None)

            yield update
