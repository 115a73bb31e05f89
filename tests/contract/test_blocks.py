"""The BlockStore contract (server_min/blocks/base.py), run on every implementation."""

from __future__ import annotations

import os
import threading

import pytest

from server_min.blocks.base import BlockStore, BlockUnreadable, Location


def test_put_then_get_each_payload(blocks: BlockStore) -> None:
    payloads = [b"first", b"", os.urandom(10_000), memoryview(b"0123456789")[3:7]]
    locations = blocks.put(payloads)
    assert len(locations) == len(payloads)
    for payload, loc in zip(payloads, locations, strict=True):
        assert blocks.get(loc) == bytes(payload)
        assert loc.length == len(payload)


def test_locations_are_opaque_values_that_round_trip(blocks: BlockStore) -> None:
    (loc,) = blocks.put([b"kept as given"])
    copy = Location(loc.pack, loc.offset, loc.length)  # as the metadata store hands it back
    assert copy == loc and blocks.get(copy) == b"kept as given"
    assert len({blocks.put([b"same"])[0] for _ in range(5)}) == 5  # every put is a new home


def test_missing_and_short_are_unreadable(blocks: BlockStore) -> None:
    (loc,) = blocks.put([b"12345"])
    with pytest.raises(BlockUnreadable, match="missing"):
        blocks.get(Location("0" * 32, 0, 1))
    with pytest.raises(BlockUnreadable, match="shorter"):
        blocks.get(Location(loc.pack, 3, 10))


def test_discard_takes_back_a_put(blocks: BlockStore) -> None:
    kept = blocks.put([b"keep"])
    gone = blocks.put([b"a", b"b"])
    blocks.discard(gone)
    with pytest.raises(BlockUnreadable):
        blocks.get(gone[1])
    assert blocks.get(kept[0]) == b"keep"
    blocks.drop_unfinished()  # never takes anything finished
    assert blocks.get(kept[0]) == b"keep"


def test_damage_is_the_service_s_to_find(blocks: BlockStore) -> None:
    """A store gives back what it holds; only a hash check (the service's, rule 5) tells a flipped byte."""
    (loc,) = blocks.put([b"x" * 100])
    assert blocks.get(loc) == b"x" * 100


def test_concurrent_puts(blocks: BlockStore) -> None:
    found: list[tuple[bytes, Location]] = []

    def worker(n: int) -> None:
        data = [os.urandom(100 + n) for _ in range(20)]
        found.extend(zip(data, [loc for d in data for loc in blocks.put([d])], strict=True))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 80 and all(blocks.get(loc) == data for data, loc in found)


def test_reads_repeat_until_discarded(blocks: BlockStore) -> None:
    """A payload reads the same every time (a cache in front answers the second), and not after a discard."""
    payloads = [os.urandom(5000), b"tail"]
    locations = blocks.put(payloads)
    for _ in range(3):
        assert [blocks.get(loc) for loc in locations] == payloads
    blocks.discard(locations)
    for loc in locations:
        with pytest.raises(BlockUnreadable, match="missing"):
            blocks.get(loc)
