"""boxctl.transfer.upload: how blocks are grouped into batches (small first, then full size)."""

from __future__ import annotations

import itertools
import os

from boxctl.config import BoxConfig
from boxctl.engine import Engine
from boxctl.transfer.download import _groups
from boxctl.transfer.upload import (
    BATCH_BLOCKS,
    BATCH_BYTES,
    FIRST_BATCH_BLOCKS,
    FIRST_BATCH_BYTES,
    batch_limits,
    default_jobs,
)
from boxctl.transport import Transport


def test_batches_start_small_and_double_up_to_the_full_size() -> None:
    limits = [batch_limits(n) for n in range(12)]
    assert limits[0] == (FIRST_BATCH_BYTES, FIRST_BATCH_BLOCKS)
    assert limits[1] == (2 * FIRST_BATCH_BYTES, 2 * FIRST_BATCH_BLOCKS)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(limits))
    assert limits[-1] == (BATCH_BYTES, BATCH_BLOCKS)


def test_download_groups_follow_the_same_ramp_and_keep_every_hash_in_order() -> None:
    block = 1 << 20
    hashes = [(f"{i:064x}", block) for i in range(200)]
    groups = list(_groups(hashes))
    assert [sha for group in groups for sha in group] == [sha for sha, _ in hashes]
    sizes = [len(group) for group in groups]
    assert sizes[:4] == [4, 8, 16, 32]  # 1 MiB blocks: 4, 8, 16 MiB, then full 32 MiB groups
    assert max(sizes) == BATCH_BYTES // block


def test_many_tiny_blocks_are_grouped_by_count() -> None:
    hashes = [(f"{i:064x}", 100) for i in range(10_000)]
    sizes = [len(group) for group in _groups(hashes)]
    assert sizes[:4] == [FIRST_BATCH_BLOCKS, 2 * FIRST_BATCH_BLOCKS, 4 * FIRST_BATCH_BLOCKS, 8 * FIRST_BATCH_BLOCKS]
    assert sum(sizes) == 10_000


def test_default_threads_follow_the_cores_from_two_to_four(monkeypatch) -> None:
    for cores, expected in ((1, 2), (2, 2), (3, 3), (16, 4), (None, 2)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert default_jobs() == expected


def test_uploads_keep_a_batch_in_flight_per_job(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    (tmp_path / ".box").mkdir()
    config = BoxConfig("http://127.0.0.1:9", 1, "box", "me", 1, "here", 256 << 10, 1 << 20, 4 << 20)
    transport = Transport(config.server, "token")

    engine = Engine(tmp_path, config, transport)
    assert (engine.threads, engine.uploads) == (2, 2)
    engine.index.close()

    engine = Engine(tmp_path, config, transport, threads=3)  # --jobs 3 sets both
    assert (engine.threads, engine.uploads) == (3, 3)
    engine.index.close()


def test_a_server_cannot_make_the_client_allocate_a_bomb() -> None:
    """A zstd frame from the server declaring 1 GiB is refused before its output is allocated."""
    import resource

    import pytest
    import zstandard

    from box_common.frames import CODEC_ZSTD, Frame
    from boxctl.errors import BoxError
    from boxctl.transfer.download import decode_block

    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=1 << 30)
    bomb = b"".join(cobj.compress(bytes(1 << 20)) for _ in range(1024)) + cobj.flush()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with pytest.raises(BoxError):
        decode_block(Frame("ab" * 32, CODEC_ZSTD, bomb), "ab" * 32)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < 128 << 20


def test_the_push_progress_follows_the_bytes_sent_not_read() -> None:
    """SentCounter: a frame moves the bar in proportion to how much of it went out; a retry counts nothing
    twice; the end counts the rest."""
    from boxctl.transfer.upload import SentCounter

    told: list[int] = []
    counter = SentCounter([(100, 1000), (50, 50), (10, 4000)], told.append)
    counter(0)
    counter(50)  # half of the first frame, a compressed block: half its plain bytes
    counter(100)
    counter(149)
    assert sum(told) == 1000 + 49 and told[0] == 500
    counter(20)  # a retry: from the start again, nothing new
    counter(120)
    assert sum(told) == 1049
    counter(155)
    assert sum(told) == 1050 + 2000
    counter.finish()
    assert sum(told) == 5050


def test_a_paced_body_reports_what_went_out_as_it_goes() -> None:
    from boxctl.transport import PIECE, SENT_PIECE, RateLimiter, _Parts

    seen: list[int] = []
    body = _Parts([b"x" * (PIECE * 3 + 5), b"y" * 10], RateLimiter(1e12), seen.append)
    pieces = list(body)
    assert sum(len(p) for p in pieces) == len(body) and seen[-1] == len(body) and seen == sorted(seen)
    assert len(seen) == len(pieces) == 5
    unpaced: list[int] = []
    assert len(list(_Parts([b"z" * (SENT_PIECE * 2 + 1)], None, unpaced.append))) == 3
    assert unpaced == [SENT_PIECE, 2 * SENT_PIECE, 2 * SENT_PIECE + 1]
