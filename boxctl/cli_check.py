"""How damaged data is told: the files a pull could not write (the server's own check is `box-server admin
check`, which `boxctl admin check` runs)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from boxctl.errors import IntegrityError

err = Console(stderr=True, highlight=False, soft_wrap=True)

HEAL = ("run 'box-server check --data DIR' on the server, or 'boxctl push --repair-blocks' from a device "
        "that has these files, then pull again")


def print_damaged(damaged: list[dict[str, Any]]) -> None:
    """The human lines for files a pull could not write because their data is damaged on the server."""
    for d in damaged:
        err.print(f"damaged   {d['path']}: {d['reason']}", markup=False)


def damaged_error(damaged: list[dict[str, Any]]) -> IntegrityError:
    """The error (exit 9) a pull ends with when some files could not be written."""
    names = ", ".join(d["path"] for d in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
    return IntegrityError(f"{len(damaged)} file(s) not pulled, their data is damaged on the server ({names}); "
                          f"every other file was applied; {HEAL}",
                          blocks=sorted({b for d in damaged for b in d["blocks"]}))


__all__ = ["damaged_error", "print_damaged"]
