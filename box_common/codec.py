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


class InflateError(ValueError):
    """A zstd payload that is not valid zstd."""


class InflateTooLarge(InflateError):
    """A zstd payload that declares, or would produce, more bytes than its limit allows."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        self.limit = limit
        self.declared = declared
        said = f"declares {declared} bytes" if declared is not None else "expands to more"
        super().__init__(f"it {said}, over the limit of {limit} bytes")


def inflate(payload: bytes | memoryview, limit: int) -> bytes:
    """The plain bytes of one zstd frame, never more than `limit`: bounded before anything is allocated.

    zstandard's one-shot decompress trusts the size a frame declares in its header and allocates it whole
    (a 17-byte header may declare 64 GiB); max_output_size only applies to frames that declare none. So
    the declared size is checked first, and a frame that declares none is streamed into at most
    `limit` + 1 bytes.
    """
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise InflateError(f"not valid zstd: {exc}") from None
    if declared > limit:
        raise InflateTooLarge(limit, declared)
    try:
        if declared >= 0:
            return decompressor().decompress(payload, max_output_size=limit)
        # No declared size: stream, so the output is counted as it grows and stops just past the limit.
        data = decompressor().stream_reader(payload, read_across_frames=False).read(limit + 1)
    except zstandard.ZstdError as exc:
        raise InflateError(f"not valid zstd: {exc}") from None
    if len(data) > limit:
        raise InflateTooLarge(limit)
    return data
