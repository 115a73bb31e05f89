"""Per-thread zstd contexts (a context is not thread-safe; making one per block costs time)."""

from __future__ import annotations

import threading

import zstandard

LEVEL = 3
_local = threading.local()


def compressor() -> zstandard.ZstdCompressor:
    """This thread's zstd compressor."""
    cctx = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = zstandard.ZstdCompressor(level=LEVEL)
    return cctx


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor."""
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx
