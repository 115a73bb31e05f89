"""Starting the walk of a big synced folder as the process starts, while the command line loads.

`boxctl status` and `boxctl push` both begin by comparing every path on disk with the index. In
a folder of 100,000 files (W5 no-op status and first push) that walk, a stat per path, and loading
the program's modules are each a large part of the command and each keeps one core busy; started
here, in forked children, the walk runs beside the loading instead of after it. The command then
collects it with `take` (only as its very first look at the disk: nothing may have been written in
between).
"""

from __future__ import annotations

import os
from pathlib import Path

from boxctl.config import BOX_DIR, find_root
from boxctl.errors import BoxError
from boxctl.local.forked import can_fork
from boxctl.local.index import STATS_CACHE
from boxctl.local.workspace import PendingScan, Workspace

EARLY_COMMANDS = {"status", "push"}  # commands whose first step is a scan (sync pulls before it looks)
OPTIONS_WITH_VALUES = {"-C", "--timeout", "--retries"}  # the main options that take a value
BIG_INDEX_BYTES = 1 << 20  # a stats snapshot this big holds about 20,000 paths: worth the forks

_started: dict[Path, PendingScan] = {}


def command_of(argv: list[str]) -> tuple[str | None, Path | None]:
    """The subcommand in `argv` (the arguments after the program name) and the -C folder, if any."""
    directory: Path | None = None
    at = 0
    while at < len(argv):
        arg = argv[at]
        if arg == "--":
            at += 1
            break
        if not arg.startswith("-"):
            break
        if arg in OPTIONS_WITH_VALUES:
            if arg == "-C" and at + 1 < len(argv):
                directory = Path(argv[at + 1])
            at += 2
            continue
        if arg.startswith("-C") and len(arg) > 2:
            directory = Path(arg[2:].removeprefix("="))
        at += 1
    return (argv[at] if at < len(argv) else None), directory


def start(argv: list[str]) -> None:
    """Begin the walk of the current box if the command is a status or push of a big one, or the
    box's first (a box never scanned has no snapshot to tell its size by).

    Best effort: on any doubt (another command, no box here, a small one, no fork) nothing starts,
    and the command walks the folder itself as usual.
    """
    command, directory = command_of(argv)
    if command not in EARLY_COMMANDS or not can_fork():
        return
    workers = min(4, os.cpu_count() or 1)
    if workers < 2:
        return
    try:
        root = find_root(directory or Path.cwd())
        try:
            if (root / BOX_DIR / STATS_CACHE).stat().st_size < BIG_INDEX_BYTES:
                return
        except FileNotFoundError:
            pass  # never scanned (a first push or status, which reads everything): size unknown, start anyway
        _started[root] = Workspace(root).start_scan(workers)
    except (OSError, BoxError):
        return


def take(root: Path) -> PendingScan | None:
    """The walk started for `root` at start-up, once; None if there is none."""
    return _started.pop(root.resolve(), None)
