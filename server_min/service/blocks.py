"""Blocks: which ones a caller must upload (no oracle), storing an upload after verifying every block,
reading them back verified (rule 5), rsync-style signatures, and remembering damage found."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from box_common.codec import compressor
from box_common.delta import signature
from box_common.frames import (
    CODEC_DAMAGED,
    CODEC_DELTA,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER,
    MAX_BLOCK,
    Frame,
    FrameError,
    decode_frames,
)
from server_min.blocks.base import BlockStore, BlockUnreadable, Location
from server_min.errors import BadRequest, Damaged, NotFound, TooLarge, Unprocessable
from server_min.integrity import is_full, out_of_space
from server_min.meta.base import MetaStore
from server_min.meta.records import StoredBlock
from server_min.service.access import Caller
from server_min.service.changes import digests
from server_min.service.expand import Budget, expand, plain_bytes, rebuild


class Blocks:
    """The block rules over a metadata store (who holds what, where) and a block store (the bytes)."""

    def __init__(self, meta: MetaStore, store: BlockStore) -> None:
        self.meta = meta
        self.store = store

    def missing(self, caller: Caller, hashes: list[str]) -> list[str]:
        """Which of `hashes` the caller must upload: all that it has not proved to hold."""
        wanted = digests(hashes)
        stored = self.meta.block_sizes(wanted)
        readable = self.meta.readable_blocks(caller.user_id, list(stored))
        readable -= self.meta.damaged_of(list(readable))  # any uploader may heal a damaged block
        # A block stored for someone else is still "missing" for this caller: no oracle.
        return [d.hex() for d in dict.fromkeys(wanted) if d not in readable]

    def store_pack(self, caller: Caller, body: bytes | memoryview) -> dict[str, int]:
        """Verify every frame of an upload body, store the new blocks in one pack, record possession.

        A writable body (the server's upload buffer) may be rearranged in place.
        """
        view = memoryview(body)
        try:
            frames = list(decode_frames(view, max_payload=MAX_BLOCK + 1024))
        except FrameError as exc:
            raise BadRequest(f"malformed upload body: {exc}") from None
        # digest -> (frame as stored, plain size, where its payload starts in the body or -1 once rebuilt)
        verified: dict[bytes, tuple[Frame, int, int]] = {}
        budget = Budget(len(view))  # all the decompressing and rebuilding this body may cause (see expand.py)
        at = 0
        for frame in frames:
            at += HEADER.size
            start = at
            at += len(frame.payload)
            if bytes.fromhex(frame.sha256) in verified:
                continue  # the same block twice: checked once
            if frame.codec == CODEC_DELTA:
                frame, plain = self._rebuild(caller, frame, budget)
                start = -1
            else:
                plain = expand(frame, budget)
            if hashlib.sha256(plain).hexdigest() != frame.sha256:
                raise Unprocessable(f"block {frame.sha256} does not match its SHA-256; nothing was stored")
            verified.setdefault(bytes.fromhex(frame.sha256), (frame, len(plain), start))
        stored = set(self.meta.block_sizes(list(verified)))
        readable = self.meta.readable_blocks(caller.user_id, list(stored)) if stored else set()
        healed = self.meta.damaged_of(list(stored))  # a fresh copy replaces a damaged one
        # A block stored for someone else that this caller cannot read takes the same path as a new one:
        # written and fsynced (its record then ignored), so the time of the answer does not tell that it
        # existed. A pack of nothing but such blocks is dropped again; in a pack with new blocks their bytes
        # stay, unreferenced (the price of no timing oracle; a compaction could reclaim them).
        new = [(d, f, size, start) for d, (f, size, start) in verified.items() if d not in readable or d in healed]
        records: list[StoredBlock] = []
        locations: list[Location] = []
        if new:
            locations = self._put(view, [(f.payload, start) for _, f, _, start in new])
            records = [StoredBlock(d, size, f.codec, loc) for (d, f, size, _), loc in zip(new, locations, strict=True)]
            if all(d in stored and d not in healed for d, *_ in new):
                self.store.discard(locations)
                locations, records = [], []
        try:
            self.meta.add_blocks(caller.user_id, records, verified.keys(), [d for d, *_ in new if d in healed])
        except Exception as exc:
            if locations:
                self.store.discard(locations)  # nothing points to them: their bytes are freed at once
            if self.meta.fault(exc) == "full":
                raise out_of_space() from None
            raise
        # The answer is the same whether a block was new or already stored for someone else: no oracle.
        return {"received": len(frames), "stored": len(verified), "bytes": len(view)}

    def _put(self, body: memoryview, payloads: list[tuple[bytes | memoryview, int]]) -> list[Location]:
        """Store `payloads` (each with where it starts in `body`, or -1 if it is not there) in the block store.

        A writable body (the server's upload buffer) is packed tight in place first, the frame headers and
        blocks stored already squeezed out (a memmove), so that a store writing neighbouring views as one
        (blocks.direct_io) writes the buffer itself: no copy.
        """
        if not body.readonly and all(start >= 0 for _, start in payloads):
            tight, end = [], 0
            for payload, start in payloads:
                size = len(payload)
                if start != end:  # never past `start`: what is still to move stays intact
                    body[end : end + size] = body[start : start + size]  # memoryview copies overlaps safely
                tight.append(body[end : end + size])
                end += size
            payloads = [(view, 0) for view in tight]
        try:
            return self.store.put([payload for payload, _ in payloads])
        except OSError as exc:
            if is_full(exc):  # the store dropped what it had written: nothing of this upload stays
                raise out_of_space() from None
            raise

    def _rebuild(self, caller: Caller, frame: Frame, budget: Budget) -> tuple[Frame, bytes]:
        """Turn a delta frame into a stored frame: rebuild the block from its base, which the caller must read."""
        payload = frame.payload
        if len(payload) < 36:
            raise BadRequest(f"delta for block {frame.sha256} is truncated")
        base_sha, window = bytes(payload[:32]).hex(), int.from_bytes(payload[32:36], "big")
        budget.check()
        base = self.read(caller, base_sha)
        budget.spend(len(base))  # reading a base decompresses and hashes it: it counts
        plain = rebuild(frame.sha256, base, window, payload[36:], budget)
        packed = compressor().compress(plain)
        if len(packed) < len(plain):
            return Frame(frame.sha256, CODEC_ZSTD, packed), plain
        return Frame(frame.sha256, CODEC_RAW, plain), plain

    def signature(self, caller: Caller, sha: str, window: int) -> bytes:
        """The rsync-style signature of a block the caller may read, for delta uploads against it."""
        if not 256 <= window <= 1 << 20:
            raise BadRequest("window must be between 256 and 1 MiB")
        return signature(self.read(caller, sha), window).encode()

    def signatures(self, caller: Caller, hashes: list[str], window: int) -> bytes:
        """Signatures of several blocks in one answer, as frames (codec raw); all must be readable."""
        if not 256 <= window <= 1 << 20:
            raise BadRequest("window must be between 256 and 1 MiB")
        if len(hashes) > 1000:
            raise TooLarge("ask for at most 1000 signatures at once")
        parts = []
        for block in self.readable(caller, hashes):
            try:
                plain = self.verified_plain(block)
            except Damaged:
                continue  # no signature, no delta against it: the client sends the block whole
            sig = signature(plain, window).encode()
            parts.append(HEADER.pack(block.sha256, CODEC_RAW, len(sig)) + sig)
        return b"".join(parts)

    def readable(self, caller: Caller, hashes: list[str]) -> list[StoredBlock]:
        """The stored blocks of `hashes`, after checking the caller may read every one."""
        wanted = list(dict.fromkeys(digests(hashes)))
        stored = self.meta.stored_blocks(wanted)
        readable = self.meta.readable_blocks(caller.user_id, list(stored))
        for d in wanted:
            if d not in readable:
                raise NotFound(f"no block {d.hex()} that you can read")
        return [stored[d] for d in wanted]

    def frame_bytes(self, block: StoredBlock) -> Iterator[bytes]:
        """One frame (header then payload) of a stored block, as the block store gives it back.

        A block the store cannot give back makes a marker frame instead (codec CODEC_DAMAGED, the reason
        as payload): a stream cannot change its status once started, and the client must learn which block
        it lost. The payload is not hashed here: the client checks every block it receives (rule 5), and
        one that fails asks GET /blocks/{sha}, which checks it here and remembers it if damaged.
        """
        try:
            payload = self.store.get(block.location)
        except BlockUnreadable as exc:
            reason = self._damaged(block.sha256, exc.reason).message.encode()
            yield HEADER.pack(block.sha256, CODEC_DAMAGED, len(reason)) + reason
            return
        yield HEADER.pack(block.sha256, block.codec, len(payload))
        yield payload

    def read(self, caller: Caller, sha: str) -> bytes:
        """The plain bytes of one block the caller may read, checked against its hash."""
        (block,) = self.readable(caller, [sha])
        return self.verified_plain(block)

    def verified_plain(self, block: StoredBlock) -> bytes:
        """The plain bytes of a stored block, or Damaged (and the block remembered as damaged) when the store
        cannot give it back, its zstd is broken or its SHA-256 does not match (rule 5)."""
        try:
            try:
                plain = self._checked(block)
            except Unprocessable:
                # A copy kept beside the store (blocks.cache) may hold a bad read of it: drop that copy and read
                # the store itself once more before calling the block damaged.
                self.store.forget([block.location])
                plain = self._checked(block)
        except BlockUnreadable as exc:
            raise self._damaged(block.sha256, exc.reason) from None
        except Unprocessable as exc:
            raise self._damaged(block.sha256, exc.message) from None
        return bytes(plain)

    def _checked(self, block: StoredBlock) -> bytes | memoryview:
        """The plain bytes of a stored block read from the store, or Unprocessable if they fail their SHA-256."""
        sha = block.sha256.hex()
        plain = plain_bytes(Frame(sha, block.codec, self.store.get(block.location)))
        if hashlib.sha256(plain).hexdigest() != sha:
            raise Unprocessable("its SHA-256 does not match")
        return plain

    def _damaged(self, digest: bytes, reason: str) -> Damaged:
        """Remember a block as damaged (uploaders are asked for it again); the error that says so."""
        self.meta.mark_damaged([(digest, reason)])
        return Damaged(f"block {digest.hex()} is damaged on the server: {reason}", blocks=[digest.hex()])


__all__ = ["Blocks"]
