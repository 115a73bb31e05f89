"""boxctl.chunking: content-defined chunking and SHA-256 block ids."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxctl.chunking import Block, Chunker, content_hash

SMALL = (1024, 4096, 16384)  # min, avg, max: many blocks from little data, so tests stay fast
DEFAULT = (256 << 10, 1 << 20, 4 << 20)  # the server's default sizes for a box


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def blocks_of(chunker: Chunker, path: Path) -> list[Block]:
    return list(chunker.blocks(path))


def test_empty_file_has_no_blocks(tmp_path: Path) -> None:
    path = write(tmp_path, "empty", b"")
    chunker = Chunker(*SMALL)
    assert blocks_of(chunker, path) == []
    assert chunker.digests(path) == (b"", 0)
    assert content_hash("file", b"", None) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("size", [1, 100, SMALL[0]])
def test_small_file_is_one_block(tmp_path: Path, size: int) -> None:
    data = noise(size, size)
    (block,) = blocks_of(Chunker(*SMALL), write(tmp_path, "small", data))
    assert block.offset == 0 and block.data == data
    assert block.digest == hashlib.sha256(data).digest()
    assert block.sha256 == hashlib.sha256(data).hexdigest()


def test_same_content_gives_same_blocks(tmp_path: Path) -> None:
    data = noise(300_000, 1)
    one = blocks_of(Chunker(*SMALL), write(tmp_path, "one", data))
    two = blocks_of(Chunker(*SMALL), write(tmp_path, "two", data))
    assert len(one) > 10
    assert [(b.digest, b.offset) for b in one] == [(b.digest, b.offset) for b in two]


def test_blocks_reassemble_to_the_file(tmp_path: Path) -> None:
    data = noise(500_000, 2) + b"\0" * 100_000 + noise(77_777, 3)
    chunker = Chunker(*SMALL)
    blocks = blocks_of(chunker, write(tmp_path, "f", data))
    assert b"".join(b.data for b in blocks) == data
    offset = 0
    for block in blocks:
        assert block.offset == offset
        assert block.digest == hashlib.sha256(block.data).digest()
        offset += len(block.data)
    digests, size = chunker.digests(tmp_path / "f")
    assert size == len(data)
    assert digests == b"".join(b.digest for b in blocks)


def test_max_and_min_block_size_respected(tmp_path: Path) -> None:
    lo, _, hi = SMALL
    data = noise(400_000, 4) + b"\0" * 200_000  # long runs of zeros force cuts at the maximum
    blocks = blocks_of(Chunker(*SMALL), write(tmp_path, "f", data))
    assert max(len(b.data) for b in blocks) == hi
    assert all(len(b.data) >= lo for b in blocks[:-1])
    assert all(len(b.data) <= hi for b in blocks)


def test_default_box_sizes_keep_blocks_under_4mb(tmp_path: Path) -> None:
    data = b"\0" * (9 << 20) + noise(3 << 20, 5)
    blocks = blocks_of(Chunker(*DEFAULT), write(tmp_path, "big", data))
    assert all(len(b.data) <= DEFAULT[2] for b in blocks)
    assert len(blocks[0].data) == DEFAULT[2]
    assert b"".join(b.data for b in blocks) == data


def test_insert_in_the_middle_changes_few_blocks(tmp_path: Path) -> None:
    data = noise(2_000_000, 6)
    middle = len(data) // 2
    edited = data[:middle] + b"inserted bytes!" * 7 + data[middle:]
    chunker = Chunker(*SMALL)
    before = blocks_of(chunker, write(tmp_path, "a", data))
    after = blocks_of(chunker, write(tmp_path, "b", edited))
    old = {b.digest for b in before}
    new = [b for b in after if b.digest not in old]
    assert len(before) > 100
    assert 1 <= len(new) <= 3, f"{len(new)} of {len(after)} blocks changed"
    assert sum(len(b.data) for b in new) <= 3 * SMALL[2]
    # Everything before the edit cuts the same, and the tail re-synchronises.
    assert before[0].digest == after[0].digest and before[-1].digest == after[-1].digest


def test_prepend_changes_few_blocks(tmp_path: Path) -> None:
    data = noise(1_000_000, 7)
    chunker = Chunker(*SMALL)
    before = {b.digest for b in blocks_of(chunker, write(tmp_path, "a", data))}
    after = blocks_of(chunker, write(tmp_path, "b", b"header\n" + data))
    assert sum(b.digest not in before for b in after) <= 3


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(Chunker(*SMALL).blocks(tmp_path / "nope"))


@given(st.binary(max_size=40_000), st.integers(min_value=0, max_value=2))
@settings(max_examples=40, deadline=None)
def test_any_content_reassembles(tmp_path_factory: pytest.TempPathFactory, data: bytes, repeat: int) -> None:
    data = data * (repeat + 1)
    path = tmp_path_factory.mktemp("hyp") / "f"
    path.write_bytes(data)
    chunker = Chunker(*SMALL)
    blocks = blocks_of(chunker, path)
    assert b"".join(b.data for b in blocks) == data
    assert all(0 < len(b.data) <= SMALL[2] for b in blocks)
    assert content_hash("file", chunker.digests(path)[0], None) == content_hash(
        "file", b"".join(b.digest for b in blocks), None)


def test_a_fifo_or_symlink_in_place_of_a_file_is_refused_at_once(tmp_path: Path) -> None:
    """A file swapped for a FIFO after the scan must not block the read (nor a symlink be followed)."""
    import errno
    import os

    from boxctl.chunking import read_small

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    chunker = Chunker(1024, 4096, 16384)
    with pytest.raises(OSError) as caught:
        chunker.digests(fifo)
    assert caught.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        read_small(fifo, 1 << 20)
    (tmp_path / "secret").write_bytes(b"s" * 10)
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError) as caught:
        read_small(tmp_path / "link", 1 << 20)
    assert caught.value.errno == errno.ELOOP
