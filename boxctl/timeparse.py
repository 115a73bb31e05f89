"""Parsing the times users type: ISO dates, @epoch seconds, and '2h' style ages."""

from __future__ import annotations

import re
import time
from datetime import datetime

from boxctl.errors import UsageError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])(?:\s*ago)?$")


def parse_time(text: str, now: float | None = None) -> float:
    """Seconds since the epoch for '2026-11-25 10:15', '2026-11-25T10:15:00+01:00', '@1764065700',
    '90m' or '2h ago' (an age), or 'now'."""
    now = time.time() if now is None else now
    value = text.strip().lower()
    if value == "now":
        return now
    if value.startswith("@"):
        try:
            return float(value[1:])
        except ValueError:
            pass
    match = AGE.match(value)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}: use '2026-11-25 10:15', '@EPOCH' or an age like '2h'"
        ) from None
    return parsed.timestamp()
