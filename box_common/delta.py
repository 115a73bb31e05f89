"""rsync-style signatures and deltas for one block, vectorised with numpy (no per-byte Python loop).

A signature cuts the old block into windows of W bytes and keeps, for each, a weak rolling
checksum (rsync's a + b<<16) and a strong xxHash64. The sender computes the weak checksum at
every offset of the new block at once (prefix sums), looks only at offsets whose weak value
appears in the signature, confirms them with xxHash64, and emits COPY and LITERAL ops. The
receiver rebuilds the block from the old one and must check the result's SHA-256.

Wire format of a delta (before zstd): a sequence of ops,
    b"C" u32 window_index u32 count     copy `count` consecutive windows of the old block
    b"L" u32 length  bytes              literal bytes
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import xxhash

WINDOW = 2048
SIG_HEADER = struct.Struct(">II")  # window size, old block length
SIG_ENTRY = np.dtype([("weak", ">u4"), ("strong", ">u8")])
COPY = struct.Struct(">cII")
LITERAL = struct.Struct(">cI")


class DeltaError(ValueError):
    """A signature or delta that is malformed or does not fit its base block."""


class DeltaTooLarge(DeltaError):
    """A delta that rebuilds more bytes, or runs more ops, than it was allowed."""


@dataclass(frozen=True)
class Signature:
    """Checksums of the whole windows of an old block."""

    window: int
    length: int
    weak: np.ndarray
    strong: np.ndarray

    def encode(self) -> bytes:
        entries = np.empty(len(self.weak), dtype=SIG_ENTRY)
        entries["weak"] = self.weak
        entries["strong"] = self.strong
        return SIG_HEADER.pack(self.window, self.length) + entries.tobytes()

    @classmethod
    def decode(cls, data: bytes) -> Signature:
        if len(data) < SIG_HEADER.size:
            raise DeltaError("signature too short")
        window, length = SIG_HEADER.unpack_from(data)
        body = data[SIG_HEADER.size :]
        if window < 16 or len(body) % SIG_ENTRY.itemsize or len(body) // SIG_ENTRY.itemsize != length // window:
            raise DeltaError("signature does not match its header")
        entries = np.frombuffer(body, dtype=SIG_ENTRY)
        return cls(window, length, entries["weak"].astype(np.uint32), entries["strong"].astype(np.uint64))


def _weak_all(data: np.ndarray, window: int) -> np.ndarray:
    """rsync's weak checksum of every window of `data` (len(data) - window + 1 values)."""
    x = data.astype(np.int64)
    s = np.concatenate(([0], np.cumsum(x)))
    t = np.concatenate(([0], np.cumsum(x * np.arange(len(x), dtype=np.int64))))
    k = np.arange(len(x) - window + 1, dtype=np.int64)
    a = s[k + window] - s[k]
    # b(k) = sum_{i<W} (W - i) x[k+i] = W*a(k) - (sum_j j*x[j] over the window - k*a(k))
    b = window * a - (t[k + window] - t[k] - k * a)
    return ((a & 0xFFFF) | ((b & 0xFFFF) << 16)).astype(np.uint32)


def signature(block: bytes, window: int = WINDOW) -> Signature:
    """The signature of an old block's whole windows."""
    count = len(block) // window
    data = np.frombuffer(block, dtype=np.uint8)
    if count == 0:
        return Signature(window, len(block), np.empty(0, np.uint32), np.empty(0, np.uint64))
    starts = np.arange(count) * window
    weak = _weak_all(data[: count * window], window)[starts]
    strong = np.array([xxhash.xxh64_intdigest(block[i : i + window]) for i in starts], dtype=np.uint64)
    return Signature(window, len(block), weak, strong)


def make_delta(new: bytes, sig: Signature) -> bytes:
    """The ops that rebuild `new` from the block `sig` describes (uncompressed wire format)."""
    window = sig.window
    out: list[bytes] = []
    if len(sig.weak) == 0 or len(new) < window:
        return LITERAL.pack(b"L", len(new)) + new
    weak_all = _weak_all(np.frombuffer(new, dtype=np.uint8), window)
    candidates = np.flatnonzero(np.isin(weak_all, sig.weak))
    by_weak: dict[int, list[tuple[int, int]]] = {}
    for index, (w, s) in enumerate(zip(sig.weak.tolist(), sig.strong.tolist(), strict=True)):
        by_weak.setdefault(w, []).append((s, index))
    pos = 0  # bytes of `new` already covered by ops
    literal_from = 0
    run: list[int] = []  # [first window, count] of the copy being extended
    i = 0
    while i < len(candidates):
        k = int(candidates[i])
        if k < pos:
            i = int(np.searchsorted(candidates, pos))
            continue
        strong = xxhash.xxh64_intdigest(new[k : k + window])
        match = next((index for s, index in by_weak.get(int(weak_all[k]), ()) if s == strong), None)
        if match is None:
            i += 1
            continue
        if k > literal_from:
            _flush_copy(out, run)
            out.append(LITERAL.pack(b"L", k - literal_from) + new[literal_from:k])
        if run and k == literal_from and run[0] + run[1] == match:
            run[1] += 1
        else:
            _flush_copy(out, run)
            run[:] = [match, 1]
        pos = literal_from = k + window
        i = int(np.searchsorted(candidates, pos))
    _flush_copy(out, run)
    if literal_from < len(new):
        out.append(LITERAL.pack(b"L", len(new) - literal_from) + new[literal_from:])
    return b"".join(out)


def _flush_copy(out: list[bytes], run: list[int]) -> None:
    if run:
        out.append(COPY.pack(b"C", run[0], run[1]))
        run.clear()


def max_ops(limit: int, window: int) -> int:
    """The most ops a delta of a block of at most `limit` bytes needs: copies of whole windows and the
    literals between them alternate, so about two per window."""
    return 2 * (limit // max(window, 1)) + 2


def apply_delta(base: bytes, delta: bytes | memoryview, window: int, limit: int) -> bytes:
    """Rebuild a block from `base` and a delta; never more than `limit` bytes, nor more ops than such a
    block needs (each op costs a turn of this Python loop: a flood of one-byte literals is refused)."""
    return apply_delta_counted(base, delta, window, limit)[0]


def apply_delta_counted(base: bytes, delta: bytes | memoryview, window: int, limit: int,
                        most_ops: int | None = None) -> tuple[bytes, int]:
    """apply_delta, also returning how many ops it ran (never more than `most_ops` when given)."""
    if window < 1:
        raise DeltaError("window of 0 bytes")
    view = memoryview(delta)
    parts: list[bytes | memoryview] = []
    size = 0
    pos = 0
    allowed = max_ops(limit, window) if most_ops is None else min(most_ops, max_ops(limit, window))
    ops_left = allowed
    while pos < len(view):
        ops_left -= 1
        if ops_left < 0:
            raise DeltaTooLarge(f"delta has more than {allowed} ops")
        op = bytes(view[pos : pos + 1])
        if op == b"C":
            if len(view) - pos < COPY.size:
                raise DeltaError("truncated copy op")
            _, first, count = COPY.unpack_from(view, pos)
            pos += COPY.size
            start, end = first * window, (first + count) * window
            if count == 0 or end > len(base):
                raise DeltaError("copy op outside the base block")
            if size + end - start > limit:
                raise DeltaTooLarge(f"delta rebuilds more than {limit} bytes")
            parts.append(base[start:end])
            size += end - start
        elif op == b"L":
            if len(view) - pos < LITERAL.size:
                raise DeltaError("truncated literal op")
            _, length = LITERAL.unpack_from(view, pos)
            pos += LITERAL.size
            if len(view) - pos < length:
                raise DeltaError("truncated literal bytes")
            if size + length > limit:
                raise DeltaTooLarge(f"delta rebuilds more than {limit} bytes")
            parts.append(view[pos : pos + length])
            pos += length
            size += length
        else:
            raise DeltaError(f"unknown delta op {op!r}")
    return b"".join(parts), allowed - ops_left
