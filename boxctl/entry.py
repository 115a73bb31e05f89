"""The `boxctl` executable: sets the garbage collector's pace first (see gc_thresholds), then runs
the command line."""

from __future__ import annotations

import os
import sys

from boxctl.gc_thresholds import pace_collector

SERVER_COMMANDS = ("serve", "admin")  # aliases of `box-server serve` and `box-server admin`


def main() -> None:
    """Run `boxctl` with the collector tuned; `boxctl serve|admin ...` becomes `box-server serve|admin ...`."""
    if sys.argv[1:2] and sys.argv[1] in SERVER_COMMANDS:
        # The same process (same pid, signals and exit code) turns into the server's own command.
        os.execv(sys.executable, [sys.executable, "-m", "server_min.cli", *sys.argv[1:]])
    pace_collector()
    from boxctl.cli import main as cli_main  # after the thresholds: importing is most of a short command

    cli_main()
