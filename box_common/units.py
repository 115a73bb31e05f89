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


SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`2G`, `500M`, `64K`, `1.5G`, `0` or a plain number of bytes (binary units; a trailing B or iB
    is allowed). ValueError with a one-line message for anything else or a negative size."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = value[-1:] if value[-1:] in "KMGT" else ""
    try:
        size = float(value[: len(value) - len(suffix)]) * SUFFIXES[suffix]
    except ValueError:
        raise ValueError(f"cannot read the size {text!r}: use e.g. 500M, 2G or a number of bytes") from None
    if size < 0:
        raise ValueError(f"a size may not be negative: {text!r}")
    return int(size)
