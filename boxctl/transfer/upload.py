"""Uploads: batched, pipelined uploads of the blocks the server lacks, as deltas where they help.

A bounded number of batches stays in flight (downloads do the same), so memory stays flat whatever
the file size, while hashing, compression and the network overlap on several threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from box_common.codec import compressor
from box_common.frames import (
    CODEC_DELTA,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER,
    Frame,
    FrameError,
    decode_frames,
    frame_parts,
)
from boxctl.api import Api
from boxctl.chunking import Block
from boxctl.errors import NotFound

# Fewer, larger requests: a batch costs a lookup, an upload, a pack and its fsyncs on the server,
# whatever its size, so a big file goes in big batches (the workload: W1 first push). The first
# batches are smaller (they double up to the full size), so the network starts while the rest is read.
BATCH_BYTES = 32 << 20
BATCH_BLOCKS = 2000
FIRST_BATCH_BYTES = 4 << 20
FIRST_BATCH_BLOCKS = 250
IN_FLIGHT = 4
SIGNATURES_PER_REQUEST = 1000  # the server's limit for POST /v1/blocks/signatures
MAX_DELTA_MISSES = 16  # consecutive deltas no smaller than the block: the data was rewritten, stop trying


def batch_limits(number: int) -> tuple[int, int]:
    """The bytes and blocks at which batch `number` (0 for the first) is full."""
    ramp = min(number, 8)  # past 8 doublings both limits are full anyway; the cap keeps the shift small
    return min(BATCH_BYTES, FIRST_BATCH_BYTES << ramp), min(BATCH_BLOCKS, FIRST_BATCH_BLOCKS << ramp)


def default_jobs() -> int:
    """Reading, hashing and download threads by default: one per core, from 2 to 4.

    More threads than cores only contend for them (and for the interpreter lock).
    """
    return max(2, min(IN_FLIGHT, os.cpu_count() or 2))


def encode_block(digest: bytes, data: bytes) -> Frame:
    """One upload frame: zstd when that makes the block smaller, raw otherwise (the data itself, no copy)."""
    # Probe a sample first: incompressible data (media, archives) is common and costly to compress whole.
    if len(data) > 65536:
        sample = data[:16384]
        if len(compressor().compress(sample)) > len(sample) * 0.97:
            return Frame(digest.hex(), CODEC_RAW, data)
    packed = compressor().compress(data)
    if len(packed) < len(data):
        return Frame(digest.hex(), CODEC_ZSTD, packed)
    return Frame(digest.hex(), CODEC_RAW, data)


class SentCounter:
    """Turns how many bytes of a pack body went out into plain bytes of progress: a frame counts in
    proportion to how much of it was sent (a compressed block of 4 MiB still moves the bar by 4 MiB of
    file). Never counts a byte twice: a retried body reports from 0 again, and only what passes the
    furthest point reached before is new."""

    def __init__(self, sizes: list[tuple[int, int]], report: Callable[[int], None]) -> None:
        self.sizes = sizes  # (wire, plain) of each frame, in body order
        self.report = report
        self.reported = 0
        self.total = sum(plain for _, plain in sizes)
        self._lock = threading.Lock()
        self._frame = self._wire_at = self._plain_at = 0  # the first frame not wholly sent, where it starts

    def __call__(self, sent: int) -> None:
        if sent < self._wire_at:  # a retry sends the body again from its start
            self._frame = self._wire_at = self._plain_at = 0
        while self._frame < len(self.sizes) and sent >= self._wire_at + self.sizes[self._frame][0]:
            wire, plain = self.sizes[self._frame]
            self._wire_at += wire
            self._plain_at += plain
            self._frame += 1
        part = 0
        if self._frame < len(self.sizes):
            wire, plain = self.sizes[self._frame]
            part = plain * (sent - self._wire_at) // wire
        self._advance(self._plain_at + part)

    def finish(self) -> None:
        """The body arrived whole: count whatever was not counted yet."""
        self._advance(self.total)

    def _advance(self, plain: int) -> None:
        with self._lock:
            new = plain - self.reported
            if new <= 0:
                return
            self.reported = plain
        self.report(new)


@dataclass
class UploadStats:
    """What an upload sent."""

    blocks_seen: int = 0
    blocks_sent: int = 0
    blocks_delta: int = 0
    bytes_plain: int = 0
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class BlockUploader:
    """Collects blocks into batches; for each batch asks which are missing and uploads those.

    `add` returns quickly: batches run on a thread pool, at most `threads` at once. Call
    `finish` to wait for all of them (it re-raises the first error).
    """

    def __init__(self, api: Api, threads: int = IN_FLIGHT,
                 on_progress: Callable[[int], None] | None = None, known: set[bytes] | None = None,
                 delta: bool = True) -> None:
        self.api = api
        self.known = known or set()  # blocks of committed versions: on the server already
        self.delta = delta
        self.delta_misses = 0
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="upload")
        self.slots = threading.Semaphore(threads)
        self.pending: list[Future[None]] = []
        self.batches: list[Future[None]] = []  # every batch sent to the pool, in order
        self.uploaded = 0  # batches[:uploaded] have all finished without error
        self.seen: set[bytes] = set()
        self.batch: list[tuple[Block, bytes | None]] = []
        self.batch_bytes = 0
        self.stats = UploadStats()
        self.on_progress = on_progress

    def add(self, block: Block, base: bytes | None = None) -> None:
        """Queue one block for upload (skipped if seen before in this run or already committed).

        `base` names the block this one replaces in the file's previous version: if the server
        lacks this block, a delta against `base` is sent when it is smaller.
        """
        self.stats.blocks_seen += 1
        if block.digest in self.seen or block.digest in self.known:
            self._progress(len(block.data))
            return
        self.seen.add(block.digest)
        self.batch.append((block, base if base != block.digest else None))
        self.batch_bytes += len(block.data)
        full_bytes, full_blocks = batch_limits(len(self.batches))
        if self.batch_bytes >= full_bytes or len(self.batch) >= full_blocks:
            self.flush()

    def flush(self) -> None:
        """Send the current batch to the pool (blocking while `threads` batches are already running)."""
        if not self.batch:
            return
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        self._raise_failed()
        self.slots.acquire()
        future = self.pool.submit(self._send, batch)
        future.add_done_callback(lambda _: self.slots.release())
        self.pending.append(future)
        self.batches.append(future)

    def position(self) -> int:
        """The batch the next block joins: every block added so far is in a batch before it or in it."""
        return len(self.batches)

    def uploaded_before(self) -> int:
        """How many batches, from the first on, have all finished uploading: blocks added at a
        position below this number are on the server."""
        while (self.uploaded < len(self.batches) and self.batches[self.uploaded].done()
               and self.batches[self.uploaded].exception() is None):
            self.uploaded += 1
        return self.uploaded

    def _raise_failed(self) -> None:
        still = []
        for future in self.pending:
            if future.done():
                future.result()
            else:
                still.append(future)
        self.pending = still

    def _send(self, batch: list[tuple[Block, bytes | None]]) -> None:
        missing = self.api.missing([b.sha256 for b, _ in batch])
        bases = {base for b, base in batch if base is not None and b.sha256 in missing}
        signatures = self._signatures(bases) if bases and self.delta and self.delta_misses < MAX_DELTA_MISSES else {}
        body: list[Frame] = []
        sizes: list[tuple[int, int]] = []  # each frame's bytes on the wire and plain bytes, for the progress
        size = 0
        for block, base in batch:
            if block.sha256 not in missing:
                self._progress(len(block.data))  # on the server already: nothing to wait for
                continue
            frame = encode_block(block.digest, block.data)
            if base is not None and base in signatures and self.delta_misses < MAX_DELTA_MISSES:
                frame = self._delta_frame(block, base, signatures[base], frame)
            body.append(frame)
            wire = HEADER.size + len(frame.payload)
            sizes.append((wire, len(block.data)))
            size += wire
            with self.stats.lock:
                self.stats.blocks_sent += 1
                self.stats.blocks_delta += frame.codec == CODEC_DELTA
                self.stats.bytes_plain += len(block.data)
                self.stats.bytes_sent += wire
            if size >= 32 << 20:
                self._upload(body, sizes)
                body, sizes, size = [], [], 0
        if body:
            self._upload(body, sizes)

    def _upload(self, body: list[Frame], sizes: list[tuple[int, int]]) -> None:
        """Upload one pack body; the progress moves as its bytes go out, not as they are read (under
        --bwlimit the bar follows the network)."""
        counter = SentCounter(sizes, self._progress)
        self.api.upload_pack(frame_parts(body), on_sent=counter)
        counter.finish()

    def _signatures(self, bases: set[bytes]) -> dict[bytes, Any]:
        """The signatures of `bases`, fetched in one request (those the server does not give are left out)."""
        from box_common.delta import WINDOW, Signature  # numpy: loaded only when a delta may help

        hashes = sorted(b.hex() for b in bases)
        found: dict[bytes, Any] = {}
        try:
            # A batch can hold more bases than one request may ask for: when its first blocks were already
            # on the server (a push resumed after a crash), no failed delta has turned deltas off yet.
            for at in range(0, len(hashes), SIGNATURES_PER_REQUEST):
                body = self.api.signatures(hashes[at : at + SIGNATURES_PER_REQUEST], WINDOW)
                found.update((bytes.fromhex(f.sha256), Signature.decode(bytes(f.payload)))
                             for f in decode_frames(body))
        except (NotFound, FrameError, ValueError):
            return {}
        return found

    def _delta_frame(self, block: Block, base: bytes, sig: Any, full: Frame) -> Frame:
        """A delta frame against `base` when it is smaller than `full`; else `full`."""
        from box_common.delta import make_delta

        ops = compressor().compress(make_delta(block.data, sig))
        payload = base + sig.window.to_bytes(4, "big") + ops
        with self.stats.lock:
            # Deltas that keep failing (a file rewritten whole) are not worth computing: stop trying.
            if len(payload) + 64 >= HEADER.size + len(full.payload):
                self.delta_misses += 1
                return full
            self.delta_misses = 0
        return Frame(block.sha256, CODEC_DELTA, payload)

    def _progress(self, n: int) -> None:
        if self.on_progress is not None:
            self.on_progress(n)

    def finish(self) -> UploadStats:
        """Wait for every batch; re-raise the first failure."""
        try:
            self.flush()
            for future in self.pending:
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.stats


