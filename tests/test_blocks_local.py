"""server_min.blocks.local: pack files in a local folder, written crash-safe."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from server_min.blocks import direct_io
from server_min.blocks.base import BlockUnreadable, Location
from server_min.blocks.local import LocalBlocks


def packs_in(root: Path) -> list[Path]:
    return sorted((root / "packs").rglob("*.pack"))


def test_write_then_read_each_payload(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    payloads = [b"first", b"", b"x" * 10_000, memoryview(b"0123456789")[3:7]]
    locations = store.put(payloads)
    assert [loc.offset for loc in locations] == [0, 5, 5, 10_005]
    for payload, loc in zip(payloads, locations, strict=True):
        assert store.get(loc) == bytes(payload)
    assert store.get(Location(locations[0].pack, 2, 6)) == b"rstxxx"  # a pack is a plain concatenation


def test_pack_lives_under_its_two_hex_prefix(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    pack = store.put([b"abc"])[0].pack
    assert len(pack) == 32 and int(pack, 16) >= 0
    assert packs_in(tmp_path / "blocks") == [tmp_path / "blocks" / "packs" / pack[:2] / f"{pack}.pack"]
    assert list((tmp_path / "blocks" / "tmp").iterdir()) == []  # the temp name was renamed away


def test_every_pack_is_new(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    ids = {store.put([b"same"])[0].pack for _ in range(20)}
    assert len(ids) == 20
    assert len(packs_in(tmp_path / "blocks")) == 20


def test_empty_pack(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    assert store.put([]) == []


def test_short_read_is_an_error(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    pack = store.put([b"12345"])[0].pack
    with pytest.raises(BlockUnreadable, match="shorter"):
        store.get(Location(pack, 3, 10))
    with pytest.raises(BlockUnreadable, match="shorter"):
        store.get(Location(pack, 100, 1))


def test_unknown_pack_is_an_error(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    with pytest.raises(BlockUnreadable, match="missing"):
        store.get(Location("ab" * 16, 0, 1))


def test_leftover_temp_files_are_dropped_only_when_asked_and_packs_kept(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    store = LocalBlocks(root)
    (where,) = store.put([b"durable"])
    (root / "tmp" / "deadbeef.part").write_bytes(b"half an upload cut off by a crash")
    again = LocalBlocks(root)  # an admin command beside a live server: its uploads in flight stay
    assert [p.name for p in (root / "tmp").iterdir()] == ["deadbeef.part"]
    again.drop_unfinished()  # a server starting up
    assert list((root / "tmp").iterdir()) == []
    assert again.get(where) == b"durable"


def test_discard_frees_the_pack(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    locations = store.put([b"a", b"b"])
    store.discard(locations)
    assert packs_in(tmp_path / "blocks") == []
    with pytest.raises(BlockUnreadable):
        store.get(locations[0])


def test_written_pack_survives_reopen_and_is_read_only_by_offset(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    locations = LocalBlocks(root).put([os.urandom(100), b"needle", os.urandom(100)])
    assert LocalBlocks(root).get(locations[1]) == b"needle"


def test_a_failed_write_leaves_no_pack(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    store = LocalBlocks(root)

    class Broken:
        def __len__(self) -> int:
            raise RuntimeError("disk gone")

    with pytest.raises((RuntimeError, TypeError)):
        store.put([b"ok", Broken()])  # type: ignore[list-item]
    assert packs_in(root) == []


@pytest.mark.parametrize("size", [4096, 3 * 4096 + 100, 100, (2 << 20) + 1])
def test_page_aligned_memory_is_written_whole(tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page-aligned buffer (as the server's upload buffers are) goes to disk past the page cache, tail too."""
    direct = []
    set_direct = direct_io._set_direct
    monkeypatch.setattr(direct_io, "_set_direct", lambda fd, on: direct.append(on) or set_direct(fd, on))
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, size + 8192)
    data = os.urandom(size)
    buffer[:size] = data
    (where,) = store.put([memoryview(buffer)[:size]])
    assert (where.offset, where.length) == (0, size)
    assert store.get(where) == data
    assert (tmp_path / "blocks" / "packs" / where.pack[:2] / f"{where.pack}.pack").stat().st_size == size
    assert (True in direct) == (size >= 4096 and bool(direct_io.DIRECT))  # whole pages were sent direct


def test_unaligned_and_mixed_payloads_after_an_aligned_one(tmp_path: Path) -> None:
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, 3 << 20)
    buffer[:] = os.urandom(3 << 20)
    parts = [memoryview(buffer)[: 5000], memoryview(buffer)[7 : 9000 + 7], b"bytes", memoryview(buffer)[4096:]]
    locations = store.put(parts)
    for part, loc in zip(parts, locations, strict=True):
        assert store.get(loc) == bytes(part)


def test_neighbouring_views_of_one_buffer_go_to_disk_as_one_write(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The upload buffer packed tight in place: its blocks are views side by side, written as one."""
    writes = []
    write = direct_io._write
    monkeypatch.setattr(direct_io, "_write", lambda fd, data, at: writes.append(data.nbytes) or write(fd, data, at))
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, 3 * 4096)
    buffer[:] = os.urandom(3 * 4096)
    view = memoryview(buffer)
    parts = [view[:100], view[100:5000], view[5000:], b"apart"]
    locations = store.put(parts)
    assert writes == [3 * 4096, 5]
    for part, loc in zip(parts, locations, strict=True):
        assert store.get(loc) == bytes(part)


def test_without_o_direct_the_page_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses O_DIRECT (tmpfs on older kernels) still gets every byte."""
    monkeypatch.setattr(direct_io, "_set_direct", lambda fd, on: False)
    store = LocalBlocks(tmp_path / "blocks")
    buffer = mmap.mmap(-1, 3 * 4096)
    buffer[:] = os.urandom(3 * 4096)
    (where,) = store.put([memoryview(buffer)])
    assert store.get(where) == bytes(buffer)


def test_a_failed_write_removes_its_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "blocks"
    store = LocalBlocks(root)

    def full(fd: int, data: Any, position: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(direct_io, "_write", full)
    with pytest.raises(OSError, match="No space"):
        store.put([b"x" * 10])
    assert packs_in(root) == [] and list((root / "tmp").iterdir()) == []
