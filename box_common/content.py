"""The identity of a version's content, computed the same way by client and server."""

from __future__ import annotations

import hashlib


def content_hash(kind: str, digests: bytes, target: str | None) -> str:
    """SHA-256 of a file's concatenated block digests, or of a link's target; '' for a folder."""
    if kind == "file":
        return hashlib.sha256(digests).hexdigest()
    if kind == "link":
        return hashlib.sha256(b"link:" + (target or "").encode()).hexdigest()
    return ""
