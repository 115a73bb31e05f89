"""Downloads: blocks fetched in batches ahead of the writer, in order, each checked against its SHA-256;
a block damaged on the server arrives as a DamagedBlock in its place, so one file is lost, not the pull."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from box_common.codec import InflateError, inflate
from box_common.frames import (
    CODEC_DAMAGED,
    CODEC_RAW,
    CODEC_ZSTD,
    MAX_BLOCK,
    Frame,
)
from boxctl.api import Api
from boxctl.errors import BoxError, IntegrityError, NetworkError
from boxctl.transfer.upload import IN_FLIGHT, batch_limits


@dataclass(frozen=True)
class DamagedBlock:
    """A block the server could not give: it is damaged there (or arrived damaged). Yielded in its place."""

    sha256: str
    reason: str

    def error(self, path: str) -> IntegrityError:
        """The error that says file `path` cannot be written because of this block."""
        return IntegrityError(f"{path}: {self.reason}", blocks=[self.sha256], path=path, reason=self.reason)


def decode_block(frame: Frame, expected: str, max_size: int = MAX_BLOCK) -> bytes:
    """The plain bytes of a downloaded frame, verified against the hash we asked for (rule 5).

    A server cannot make it allocate more than `max_size` (no block is larger): a zstd frame that
    declares or expands to more is refused before its output is allocated.
    """
    if frame.sha256 != expected:
        raise BoxError(f"the server sent block {frame.sha256} where {expected} was asked for")
    if frame.codec == CODEC_DAMAGED:
        reason = bytes(frame.payload).decode("utf-8", "replace")[:300]
        raise IntegrityError(reason or f"block {expected} is damaged on the server", blocks=[expected])
    if frame.codec == CODEC_ZSTD:
        try:
            data = inflate(frame.payload, max_size)
        except InflateError as exc:
            raise IntegrityError(f"block {expected} arrived damaged ({exc})", blocks=[expected]) from None
    elif frame.codec == CODEC_RAW:
        if len(frame.payload) > max_size:
            raise BoxError(f"block {expected} arrived with {len(frame.payload)} bytes, over the block limit")
        data = bytes(frame.payload)
    else:
        raise BoxError(f"block {expected} came with an unknown codec {frame.codec}")
    if hashlib.sha256(data).hexdigest() != expected:
        raise IntegrityError(f"block {expected} arrived damaged (its SHA-256 does not match); nothing was written",
                             blocks=[expected])
    return data


def download_blocks(api: Api, hashes: Iterable[tuple[str, int]], threads: int = IN_FLIGHT,
                    local: Callable[[str], bytes | None] | None = None) -> Iterator[bytes | DamagedBlock]:
    """Yield the plain bytes of each (hash, size) in order, fetching batches ahead on a thread pool.

    `local` may supply a block from the device itself (then it is not downloaded). A block damaged on
    the server comes as a DamagedBlock in its place, and the stream goes on: the caller decides what
    the loss of that block means (one file not written, not the whole pull).
    """
    groups = _groups(hashes)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="download") as pool:
        ahead: deque[tuple[list[str], Future[dict[str, bytes | DamagedBlock]]]] = deque()
        for group in groups:
            ahead.append((group, pool.submit(_fetch_group, api, group, local)))
            if len(ahead) > threads:
                yield from _drain(ahead.popleft())
        while ahead:
            yield from _drain(ahead.popleft())


def _drain(item: tuple[list[str], Future[dict[str, bytes | DamagedBlock]]]) -> Iterator[bytes | DamagedBlock]:
    group, future = item
    blocks = future.result()
    for sha in group:
        yield blocks[sha]


def _groups(hashes: Iterable[tuple[str, int]]) -> Iterator[list[str]]:
    group: list[str] = []
    size = number = 0
    for sha, length in hashes:
        group.append(sha)
        size += length
        full_bytes, full_blocks = batch_limits(number)
        if size >= full_bytes or len(group) >= full_blocks:
            yield group
            group, size, number = [], 0, number + 1
    if group:
        yield group


def _fetch_checked(api: Api, sha: str) -> bytes | DamagedBlock:
    """A block that arrived damaged, asked for again alone: the server checks it before it answers, so a
    block damaged in its store comes back as an integrity error (and is remembered there as damaged)."""
    try:
        data = api.block(sha)
    except IntegrityError as exc:
        return DamagedBlock(sha, exc.message.removeprefix("data damaged on the server: "))
    if hashlib.sha256(data).hexdigest() != sha:
        return DamagedBlock(sha, "it arrived damaged twice")
    return data


def _fetch_group(api: Api, group: list[str], local: Callable[[str], bytes | None] | None
                 ) -> dict[str, bytes | DamagedBlock]:
    found: dict[str, bytes | DamagedBlock] = {}
    wanted = []
    for sha in dict.fromkeys(group):
        data = local(sha) if local is not None else None
        if data is not None and hashlib.sha256(data).hexdigest() == sha:
            found[sha] = data
        else:
            wanted.append(sha)
    attempt = 0
    while wanted:
        try:
            for frame, sha in zip(api.fetch(wanted), wanted, strict=False):
                try:
                    found[sha] = decode_block(frame, sha)
                except IntegrityError as exc:
                    found[sha] = _fetch_checked(api, sha) if frame.codec != CODEC_DAMAGED else DamagedBlock(
                        sha, exc.message)
        except NetworkError:
            # A download cut off mid-stream: keep what arrived and ask again for the rest.
            attempt += 1
            if attempt > api.retries:
                raise
            api.pause(attempt)
        wanted = [sha for sha in wanted if sha not in found]
    return found
