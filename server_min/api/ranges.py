"""Resumable downloads of a link's file: the validators (a strong ETag from the file's content hash,
Last-Modified from its mtime), conditional requests (If-None-Match, If-Range) and single byte ranges
(RFC 9110 sections 13 and 14), so that `curl -C -`, `wget -c` and download managers can resume.

Only one range per request is served: a request for several gets the whole file (200), which the
RFC allows. A Range header that cannot be read is ignored, as the RFC asks; one that is readable but
lies wholly past the end of the file is answered 416.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

from box_common.content import content_hash

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class Unsatisfiable(Exception):
    """A byte range that lies wholly outside the file (416, with `Content-Range: bytes */SIZE`)."""


@dataclass(frozen=True)
class Validators:
    """What identifies one version of a file to HTTP caches and resuming clients."""

    etag: str
    last_modified: str | None

    @classmethod
    def of(cls, blocks: bytes, mtime_ns: int) -> Validators:
        """Validators of a file from its block list (its bytes, exactly) and its mtime."""
        # Strong: equal block lists are equal bytes, so two versions with one ETag are byte for byte the same.
        etag = f'"{content_hash("file", blocks, None)}"'
        modified = email.utils.formatdate(mtime_ns / 1e9, usegmt=True) if mtime_ns > 0 else None
        return cls(etag, modified)

    def headers(self) -> dict[str, str]:
        """ETag, and Last-Modified when the file has an mtime."""
        return {"ETag": self.etag, **({"Last-Modified": self.last_modified} if self.last_modified else {})}

    def none_match(self, header: str | None) -> bool:
        """True if an If-None-Match header names this version (weak comparison): answer 304."""
        if header is None:
            return False
        tags = [t.strip() for t in header.split(",")]
        return "*" in tags or any(t.removeprefix("W/") == self.etag for t in tags)

    def range_applies(self, if_range: str | None) -> bool:
        """False if an If-Range header names another version: then the whole file is sent (200)."""
        if if_range is None:
            return True
        value = if_range.strip()
        if value.startswith(('"', "W/")):
            return value == self.etag  # strong comparison: a weak tag never matches
        return self.last_modified is not None and value == self.last_modified


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The [start, stop) bytes of a file of `size` that a Range header asks for; None for the whole file
    (no header, one that cannot be read, or several ranges). Unsatisfiable when it lies past the end."""
    if header is None:
        return None
    match = _RANGE.match(header)
    if match is None:  # several ranges, another unit, or garbage: the whole file
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - count), size
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable()
    stop = min(size, int(last) + 1) if last else size
    return start, stop


__all__ = ["Unsatisfiable", "Validators", "byte_range"]
