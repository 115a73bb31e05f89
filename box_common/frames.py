"""The binary frame format that carries several blocks in one HTTP body.

A body is a plain concatenation of frames; each frame is
    32 bytes  SHA-256 of the block's plain bytes
     1 byte   codec: 0 = raw, 1 = zstd, 2 = delta (upload only: 32-byte base SHA-256,
              4-byte window size, then the zstd-compressed ops of box_common.delta),
              255 = damaged (download only: the server found the block damaged; the payload is
              the reason, UTF-8; the rest of the stream goes on)
     4 bytes  payload length, unsigned big-endian
     N bytes  payload (the block, compressed when codec is zstd)
Used by POST /v1/blocks/pack (upload) and POST /v1/blocks/fetch (download).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

HEADER = struct.Struct(">32sBI")
MAX_BLOCK = 16 << 20  # no block is larger, plain: every decompression and rebuild stops there
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_DELTA = 2
CODEC_DAMAGED = 255  # never accepted in an upload, so not among CODEC_NAMES
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd", CODEC_DELTA: "delta"}
CODEC_IDS = {name: code for code, name in CODEC_NAMES.items()}


class FrameError(ValueError):
    """A frame body that is truncated or names an unknown codec."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One block on the wire: its id (hex SHA-256 of the plain bytes), codec and payload."""

    sha256: str
    codec: int
    payload: bytes | memoryview


def encode_frame(frame: Frame) -> bytes:
    """The header of `frame` followed by its payload, as one bytes object."""
    digest = bytes.fromhex(frame.sha256)
    if len(digest) != 32:
        raise ValueError(f"block id {frame.sha256[:80]!r} is not a SHA-256")
    return HEADER.pack(digest, frame.codec, len(frame.payload)) + bytes(frame.payload)


def encode_frames(frames: Iterable[Frame]) -> bytes:
    """Concatenate frames into one body."""
    return b"".join(encode_frame(f) for f in frames)


def frame_parts(frames: Iterable[Frame], merge_below: int = 64 << 10) -> list[bytes | memoryview]:
    """The body of `frames` as buffers to send one after another, without copying large payloads.

    Headers and payloads smaller than `merge_below` are merged into one piece up to the next large
    payload, so many tiny blocks still make a few large sends.
    """
    parts: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for frame in frames:
        digest = bytes.fromhex(frame.sha256)
        if len(digest) != 32:
            raise ValueError(f"block id {frame.sha256[:80]!r} is not a SHA-256")
        small.append(HEADER.pack(digest, frame.codec, len(frame.payload)))
        if len(frame.payload) < merge_below:
            small.append(frame.payload)
            continue
        parts.append(b"".join(small))
        parts.append(frame.payload)
        small = []
    if small:
        parts.append(b"".join(small))
    return parts


def decode_frames(body: bytes | memoryview, max_payload: int = 64 << 20) -> Iterator[Frame]:
    """Split a body into frames (payloads are zero-copy memoryviews); raise FrameError if malformed."""
    view = memoryview(body)
    pos = 0
    while pos < len(view):
        if len(view) - pos < HEADER.size:
            raise FrameError("truncated frame header")
        digest, codec, length = HEADER.unpack_from(view, pos)
        pos += HEADER.size
        if codec not in CODEC_NAMES:
            raise FrameError(f"unknown codec {codec}")
        if length > max_payload:
            raise FrameError(f"frame payload of {length} bytes is over the limit of {max_payload}")
        if len(view) - pos < length:
            raise FrameError("truncated frame payload")
        yield Frame(digest.hex(), codec, view[pos : pos + length])
        pos += length
