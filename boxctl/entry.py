"""The `boxctl` executable: sets the garbage collector's pace first, then runs the command line.

A push or pull of 100,000 files makes millions of small objects and almost no reference cycles:
with the default thresholds the cycle collector runs thousands of times over the same live
objects and frees nothing (the workload: W5 first push). It still runs, just far less often. Set
before the command line's modules are imported, the same pace also spares the collections that
loading them causes.
"""

from __future__ import annotations

import gc
import os
import sys

GC_THRESHOLDS = (50_000, 20, 20)
SERVER_COMMANDS = ("serve", "admin")  # aliases of `box-server serve` and `box-server admin`


def main() -> None:
    """Run `boxctl` with the collector tuned; `boxctl serve|admin ...` becomes `box-server serve|admin ...`."""
    if sys.argv[1:2] and sys.argv[1] in SERVER_COMMANDS:
        # The same process (same pid, signals and exit code) turns into the server's own command.
        os.execv(sys.executable, [sys.executable, "-m", "server_min.cli", *sys.argv[1:]])
    gc.set_threshold(*GC_THRESHOLDS)
    from boxctl.cli import main as cli_main  # after the thresholds: importing is most of a short command

    cli_main()
