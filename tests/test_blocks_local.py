"""server_min.blocks.local: pack files in a local folder, written crash-safe."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from server_min.blocks import local
from server_min.blocks.local import LocalBlocks


def packs_in(root: Path) -> list[Path]:
    return sorted((root / "packs").rglob("*.pack"))


def test_write_then_read_each_payload(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    payloads = [b"first", b"", b"x" * 10_000, memoryview(b"0123456789")[3:7]]
    pack, offsets = store.write_pack(payloads)
    assert offsets == [0, 5, 5, 10_005]
    for payload, offset in zip(payloads, offsets, strict=True):
        assert store.read(pack, offset, len(payload)) == bytes(payload)
    assert store.read(pack, 2, 6) == b"rstxxx"  # a pack is a plain concatenation


def test_pack_lives_under_its_two_hex_prefix(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    pack, _ = store.write_pack([b"abc"])
    assert len(pack) == 32 and int(pack, 16) >= 0
    assert packs_in(tmp_path / "blocks") == [tmp_path / "blocks" / "packs" / pack[:2] / f"{pack}.pack"]
    assert list((tmp_path / "blocks" / "tmp").iterdir()) == []  # the temp name was renamed away


def test_every_pack_is_new(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    ids = {store.write_pack([b"same"])[0] for _ in range(20)}
    assert len(ids) == 20
    assert len(packs_in(tmp_path / "blocks")) == 20


def test_empty_pack(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    pack, offsets = store.write_pack([])
    assert offsets == []
    assert store.read(pack, 0, 0) == b""


def test_short_read_is_an_error(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    pack, _ = store.write_pack([b"12345"])
    with pytest.raises(OSError, match="shorter"):
        store.read(pack, 3, 10)
    with pytest.raises(OSError, match="shorter"):
        store.read(pack, 100, 1)


def test_unknown_pack_is_an_error(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    with pytest.raises(FileNotFoundError):
        store.read("ab" * 16, 0, 1)


def test_leftover_temp_files_are_dropped_at_start_and_packs_kept(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    store = LocalBlocks(root)
    pack, offsets = store.write_pack([b"durable"])
    (root / "tmp" / "deadbeef.part").write_bytes(b"half an upload cut off by a crash")
    again = LocalBlocks(root)
    assert list((root / "tmp").iterdir()) == []
    assert again.read(pack, offsets[0], 7) == b"durable"


def test_written_pack_survives_reopen_and_is_read_only_by_offset(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    pack, offsets = LocalBlocks(root).write_pack([os.urandom(100), b"needle", os.urandom(100)])
    assert LocalBlocks(root).read(pack, offsets[1], 6) == b"needle"


def test_a_failed_write_leaves_no_pack(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    store = LocalBlocks(root)

    class Broken:
        def __len__(self) -> int:
            raise RuntimeError("disk gone")

    with pytest.raises((RuntimeError, TypeError)):
        store.write_pack([b"ok", Broken()])  # type: ignore[list-item]
    assert packs_in(root) == []


@pytest.mark.parametrize("size", [4096, 3 * 4096 + 100, 100, (2 << 20) + 1])
def test_page_aligned_memory_is_written_whole(tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page-aligned buffer (as the server's upload buffers are) goes to disk past the page cache, tail too."""
    direct = []
    set_direct = local._set_direct
    monkeypatch.setattr(local, "_set_direct", lambda fd, on: direct.append(on) or set_direct(fd, on))
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, size + 8192)
    data = os.urandom(size)
    buffer[:size] = data
    pack, offsets = store.write_pack([memoryview(buffer)[:size]])
    assert offsets == [0]
    assert store.read(pack, 0, size) == data
    assert (tmp_path / "blocks" / "packs" / pack[:2] / f"{pack}.pack").stat().st_size == size
    assert (True in direct) == (size >= 4096 and bool(local.DIRECT))  # whole pages were sent direct


def test_unaligned_and_mixed_payloads_after_an_aligned_one(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, 3 << 20)
    buffer[:] = os.urandom(3 << 20)
    parts = [memoryview(buffer)[: 5000], memoryview(buffer)[7 : 9000 + 7], b"bytes", memoryview(buffer)[4096:]]
    pack, offsets = store.write_pack(parts)
    for part, offset in zip(parts, offsets, strict=True):
        assert store.read(pack, offset, len(part)) == bytes(part)


def test_without_o_direct_the_page_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses O_DIRECT (tmpfs on older kernels) still gets every byte."""
    monkeypatch.setattr(local, "_set_direct", lambda fd, on: False)
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, 3 * 4096)
    buffer[:] = os.urandom(3 * 4096)
    pack, _ = store.write_pack([memoryview(buffer)])
    assert store.read(pack, 0, 3 * 4096) == bytes(buffer)


def test_a_failed_write_removes_its_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "blocks"
    store = LocalBlocks(root)

    def full(fd: int, data: Any, position: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local, "_write", full)
    with pytest.raises(OSError, match="No space"):
        store.write_pack([b"x" * 10])
    assert packs_in(root) == [] and list((root / "tmp").iterdir()) == []
