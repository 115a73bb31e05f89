"""The options of one run: read once by the root command, carried in click's context (never a global).

Options given before the subcommand (-C, -q, --timeout, --retries) are set by the root callback;
a subcommand's own -q, --bwlimit and --jobs are folded in by `current`, which every command calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from boxctl.errors import UsageError
from boxctl.output import Printer
from boxctl.transport import parse_rate


@dataclass(frozen=True)
class Options:
    """Settings shared by every command of one run."""

    quiet: bool = False
    directory: Path | None = None
    bwlimit: float | None = None
    jobs: int | None = None  # None: the engine's defaults (see Engine)
    timeout: float = 60.0
    retries: int = 6
    delta: bool = True

    def here(self) -> Path:
        """The folder the command runs in (-C, else the current one); a usage error if -C names no folder."""
        if self.directory is None:
            return Path.cwd().resolve()
        if not self.directory.is_dir():
            what = "is not a folder" if self.directory.exists() else "no such folder"
            raise UsageError(f"-C {self.directory}: {what}")
        return self.directory.resolve()

    @property
    def printer(self) -> Printer:
        return Printer(self.quiet)


def current(ctx: typer.Context, quiet: bool = False, bwlimit: str | None = None, jobs: int | None = None) -> Options:
    """This run's options (from `ctx`, the command's context) with its own -q, --bwlimit and --jobs folded in."""
    opts = ctx.find_object(Options) or Options()
    if quiet:
        opts = replace(opts, quiet=True)
    if bwlimit is not None:
        opts = replace(opts, bwlimit=parse_rate(bwlimit))
    if jobs is not None:
        if not 1 <= jobs <= 64:
            raise UsageError("--jobs must be between 1 and 64")
        opts = replace(opts, jobs=jobs)
    return opts


def keep(ctx: typer.Context, opts: Options) -> Options:
    """Hand `opts` down to the subcommands of a group (its own -q applies to them too)."""
    ctx.obj = opts
    return opts


MAX_SEQ = (1 << 62) - 1  # the highest commit number a server takes


def check_number(value: int | None, option: str, low: int, high: int = MAX_SEQ) -> None:
    """A usage error (exit 2, one line) unless `value` is None or within [low, high]: checked here, before
    anything is sent, rather than left to the server's own validation."""
    if value is not None and not low <= value <= high:
        span = f"{low} or more" if high == MAX_SEQ else f"between {low} and {high:,}"
        raise UsageError(f"{option} must be {span}, not {value}")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing but errors.")]
BwOpt = Annotated[str | None, typer.Option("--bwlimit", help="Limit bandwidth, rsync style: KiB/s, or 500K, 2M.")]
JobsOpt = Annotated[int | None, typer.Option(
    "--jobs", "-j", help="Batches of blocks in flight and hashing threads (default: 4 uploads in flight, "
    "other work one thread per core, 2 to 4).")]
ServerOpt = Annotated[str | None, typer.Option("--server", help="Server URL (default: this folder's, or BOX_SERVER).")]
