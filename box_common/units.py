"""The one way sizes are written for people, by the CLI and the link pages: binary units (B, KiB, MiB, GiB, TiB)."""

from __future__ import annotations


def format_size(n: int) -> str:
    """`195.3 KiB` for 200,000 bytes; whole bytes below 1 KiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
