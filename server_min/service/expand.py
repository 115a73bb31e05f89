"""Bounded expansion of uploads: every decompression and delta rebuild of one request draws on a budget.

A few KiB of zstd can declare or expand to GiBs, and a delta of a few bytes copies a whole 16 MiB
base: without bounds, a 10 KB request made 1.6 GB of blocks. Here each expansion is capped at the
block limit before anything is allocated, and all of a request's expansions together (decompressed
blocks, rebuilt blocks, delta bases read, delta ops) at a budget that grows with the body: a fixed
allowance that a real client's pack never reaches (boxctl sends at most about 48 MiB of plain bytes
per pack) plus a multiple of the body. CPU time is capped too. Past either, the request answers 413
and, since a pack is verified whole before any of it is written, nothing of it is stored.
"""

from __future__ import annotations

import time

from box_common.codec import InflateError, InflateTooLarge, inflate
from box_common.delta import DeltaError, DeltaTooLarge, apply_delta_counted, max_ops
from box_common.frames import CODEC_RAW, CODEC_ZSTD, MAX_BLOCK, Frame
from server_min.errors import TooLarge, Unprocessable

BUDGET_BASE = 160 << 20
BUDGET_PER_BODY_BYTE = 8
CPU_SECONDS = 10.0
OP_COST = 256  # budget bytes charged per delta op: each costs a turn of a Python loop
MIN_WINDOW = 256  # the smallest delta window the server gives signatures for


class Budget:
    """What one request may still make the server produce, in bytes, and until when (thread CPU time)."""

    def __init__(self, body_size: int, base: int = BUDGET_BASE, per_byte: int = BUDGET_PER_BODY_BYTE,
                 cpu_seconds: float | None = None) -> None:
        self.total = base + per_byte * body_size
        self.left = self.total
        # Read at each request (not bound at import), so a test may lower CPU_SECONDS to see the cap work fast.
        self.cpu_until = time.thread_time() + (CPU_SECONDS if cpu_seconds is None else cpu_seconds)

    def cap(self, limit: int = MAX_BLOCK) -> int:
        """The most the next expansion may produce: the block limit, or what is left if less."""
        self.check()
        return min(limit, self.left)

    def spend(self, size: int) -> None:
        """Count `size` bytes produced; 413 once the budget or the CPU time is used up."""
        self.left -= size
        self.check()

    def check(self) -> None:
        if self.left < 0:
            raise TooLarge(f"this upload expands to more than {self.total} bytes; nothing was stored "
                           "(send fewer blocks per request)")
        if time.thread_time() > self.cpu_until:
            raise TooLarge("this upload takes too long to check; nothing was stored (send fewer blocks per request)")


def plain_bytes(frame: Frame, limit: int = MAX_BLOCK) -> bytes | memoryview:
    """The block's plain bytes: decompressed when its codec says zstd (never more than `limit`, checked
    before allocating); a raw payload is returned as is, without a copy."""
    if frame.codec == CODEC_RAW:
        if len(frame.payload) > limit:
            raise Unprocessable(f"block {frame.sha256} has {len(frame.payload)} bytes, over the limit of {limit}")
        return frame.payload
    if frame.codec != CODEC_ZSTD:
        raise Unprocessable(f"block {frame.sha256} has codec {frame.codec}, which cannot be stored or read as is")
    try:
        return inflate(frame.payload, limit)
    except InflateTooLarge as exc:
        raise Unprocessable(f"block {frame.sha256} is over the block limit: {exc}") from None
    except InflateError as exc:
        raise Unprocessable(f"block {frame.sha256} is {exc}") from None


def expand(frame: Frame, budget: Budget) -> bytes | memoryview:
    """plain_bytes of an uploaded zstd or raw frame, drawn from `budget` (413 when it runs out)."""
    if frame.codec != CODEC_ZSTD:
        return plain_bytes(frame)
    cap = budget.cap()
    try:
        plain = inflate(frame.payload, cap)
    except InflateTooLarge as exc:
        if cap < MAX_BLOCK and (exc.declared is None or exc.declared <= MAX_BLOCK):
            budget.spend(cap + 1)  # within the block limit, but not within what this request has left
        raise Unprocessable(f"block {frame.sha256} is over the block limit: {exc}") from None
    except InflateError as exc:
        raise Unprocessable(f"block {frame.sha256} is {exc}") from None
    budget.spend(len(plain))
    return plain


def rebuild(sha256: str, base: bytes, window: int, packed_ops: bytes | memoryview, budget: Budget) -> bytes:
    """The block a delta frame describes, from its base (already read and counted) and its zstd ops."""
    if not MIN_WINDOW <= window <= MAX_BLOCK:
        raise Unprocessable(f"delta for block {sha256} has a window of {window} bytes "
                            f"(from {MIN_WINDOW} to {MAX_BLOCK})")
    ops_limit = MAX_BLOCK + 1024
    cap = budget.cap(ops_limit)
    try:
        ops = inflate(packed_ops, cap)
    except InflateTooLarge as exc:
        if cap < ops_limit:
            budget.spend(cap + 1)
        raise Unprocessable(f"delta for block {sha256} is over the limit: {exc}") from None
    except InflateError as exc:
        raise Unprocessable(f"delta for block {sha256} is invalid: {exc}") from None
    budget.spend(len(ops))
    cap = budget.cap()
    most_ops = budget.left // OP_COST
    try:
        plain, count = apply_delta_counted(base, ops, window, cap, most_ops)
    except DeltaTooLarge as exc:
        if cap < MAX_BLOCK or most_ops < max_ops(MAX_BLOCK, window):
            budget.spend(budget.left + 1)
        raise Unprocessable(f"delta for block {sha256} is over the limit: {exc}") from None
    except DeltaError as exc:
        raise Unprocessable(f"delta for block {sha256} is invalid: {exc}") from None
    budget.spend(len(plain) + OP_COST * count)
    return plain


__all__ = ["Budget", "expand", "plain_bytes", "rebuild"]
