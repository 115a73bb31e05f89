"""server_min.blocks.cache: a bounded disk cache of recently read payloads in front of a block store."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from box_common.frames import CODEC_RAW, Frame, encode_frames
from server_min.blocks.base import BlockUnreadable, Location
from server_min.blocks.cache import HEAD, CachedBlocks
from server_min.blocks.memory import MemoryBlocks
from server_min.errors import Damaged
from server_min.meta.memory import MemoryMeta
from server_min.notify.memory import MemoryNotifier
from server_min.service import Service

KiB = 1024


class CountingBlocks(MemoryBlocks):
    """MemoryBlocks that counts the reads which reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, location: Location) -> bytes:
        self.reads += 1
        return super().get(location)


class BadReadBlocks(CountingBlocks):
    """Gives `bad` wrong answers (a byte flipped, as a read gone wrong on its way), then good ones."""

    bad = 0

    def get(self, location: Location) -> bytes:
        data = super().get(location)
        if self.bad:
            self.bad -= 1
            return bytes([data[0] ^ 1]) + data[1:]
        return data


def cache_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("slot-*/??/*") if p.is_file()]


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in cache_files(folder))


@pytest.fixture
def store() -> CountingBlocks:
    return CountingBlocks()


def test_a_second_read_is_a_hit(store: CountingBlocks, tmp_path: Path) -> None:
    cache = CachedBlocks(store, tmp_path / "cache", 1 << 20)
    locations = cache.put([b"alpha", os.urandom(10 * KiB)])
    assert cache_files(tmp_path / "cache") == []  # an upload is not cached: only reads fill it
    first = [cache.get(loc) for loc in locations]
    assert store.reads == 2 and (cache.hits, cache.misses) == (0, 2)
    assert [cache.get(loc) for loc in locations] == first
    assert store.reads == 2 and (cache.hits, cache.misses) == (2, 2)
    inside = Location(locations[1].pack, locations[1].offset + 3, 7)
    assert cache.get(inside) == first[1][3:10]  # another location: its own entry
    assert store.reads == 3


def test_least_recently_read_go_first_and_the_bound_holds(store: CountingBlocks, tmp_path: Path) -> None:
    entry = HEAD.size + 100 * KiB
    cache = CachedBlocks(store, tmp_path / "cache", 3 * entry)
    a, b, c, d = (cache.put([os.urandom(100 * KiB)])[0] for _ in range(4))
    for loc in (a, b, c, a, d):  # a read again: b is now the least recently read
        cache.get(loc)
    assert cache.size == disk_bytes(tmp_path / "cache") == 3 * entry
    reads = store.reads
    cache.get(a), cache.get(c), cache.get(d)
    assert store.reads == reads
    cache.get(b)
    assert store.reads == reads + 1
    for _ in range(20):
        cache.get(cache.put([os.urandom(random.randrange(1, 150 * KiB))])[0])
        assert cache.size <= 3 * entry and disk_bytes(tmp_path / "cache") == cache.size


def test_a_payload_over_the_bound_is_not_kept(store: CountingBlocks, tmp_path: Path) -> None:
    cache = CachedBlocks(store, tmp_path / "cache", 10 * KiB)
    (big,) = cache.put([os.urandom(20 * KiB)])
    assert cache.get(big) == cache.get(big) and store.reads == 2
    assert cache.size == 0 and cache_files(tmp_path / "cache") == []


def test_size_zero_is_no_cache(store: CountingBlocks, tmp_path: Path) -> None:
    cache = CachedBlocks(store, tmp_path / "cache", 0)
    (loc,) = cache.put([b"x"])
    assert cache.get(loc) == cache.get(loc) == b"x" and store.reads == 2
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "header", "grow"])
def test_a_damaged_cache_file_is_a_miss_and_is_replaced(store: CountingBlocks, tmp_path: Path, damage: str) -> None:
    cache = CachedBlocks(store, tmp_path / "cache", 1 << 20)
    data = os.urandom(50 * KiB)
    (loc,) = cache.put([data])
    cache.get(loc)
    (path,) = cache_files(tmp_path / "cache")
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[HEAD.size + 1234] ^= 0x10  # one bit of the payload: the service's SHA-256 would call it damage
        path.write_bytes(raw)
    elif damage == "truncate":
        path.write_bytes(raw[:-1])
    elif damage == "delete":
        path.unlink()
    elif damage == "header":
        path.write_bytes(b"junk" + raw[4:])
    else:
        path.write_bytes(raw + b"more")  # longer than recorded: what is read is still checked, and sound
    reads = store.reads
    assert cache.get(loc) == data  # never the damaged copy
    assert store.reads == reads + (damage != "grow")
    assert cache.get(loc) == data and store.reads == reads + (damage != "grow")  # a good copy again
    assert path.read_bytes()[HEAD.size :][: len(data)] == data


def test_unreadable_blocks_stay_unreadable(store: CountingBlocks, tmp_path: Path) -> None:
    cache = CachedBlocks(store, tmp_path / "cache", 1 << 20)
    with pytest.raises(BlockUnreadable, match="missing"):
        cache.get(Location("0" * 32, 0, 4))
    assert cache.size == 0 and cache_files(tmp_path / "cache") == []


def test_forget_and_discard_drop_cached_copies(store: CountingBlocks, tmp_path: Path) -> None:
    cache = CachedBlocks(store, tmp_path / "cache", 1 << 20)
    kept, gone = cache.put([b"kept"]), cache.put([b"gone", b"too"])
    for loc in [*kept, *gone]:
        cache.get(loc)
    cache.forget(kept)
    reads = store.reads
    assert cache.get(kept[0]) == b"kept" and store.reads == reads + 1
    cache.discard(gone)
    for loc in gone:
        with pytest.raises(BlockUnreadable):
            cache.get(loc)
    assert cache.size == disk_bytes(tmp_path / "cache") == HEAD.size + 4


def test_concurrent_readers(store: CountingBlocks, tmp_path: Path) -> None:
    payloads = [os.urandom(random.randrange(1, 40 * KiB)) for _ in range(60)]
    locations = [loc for data in payloads for loc in store.put([data])]
    bound = 200 * KiB  # a third of them or so: hits, misses and evictions all at once
    cache = CachedBlocks(store, tmp_path / "cache", bound)
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                i = rng.randrange(len(payloads)) if rng.random() < 0.5 else rng.randrange(10)  # a hot set
                assert cache.get(locations[i]) == payloads[i]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.hits > 0 and cache.hits + cache.misses == 8 * 300
    assert cache.size <= bound and disk_bytes(tmp_path / "cache") <= bound
    assert list((cache.root or tmp_path).joinpath("tmp").iterdir()) == []  # every temp file renamed or removed


def test_each_process_has_a_slot_and_the_next_one_takes_it_over(store: CountingBlocks, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    first = CachedBlocks(store, folder, 1 << 20)
    second = CachedBlocks(store, folder, 1 << 20)  # as another process: a slot of its own (flock)
    assert first.root != second.root and first.root and second.root
    (loc,) = store.put([b"warm"])
    first.get(loc)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    first.close()
    second.close()
    third = CachedBlocks(store, folder, 1 << 20)  # takes over one dead slot; the other dead one is deleted
    assert len(list(folder.glob("slot-*"))) == 1 and not list(folder.glob("trash-*"))
    third.close()
    small = CachedBlocks(store, folder, 10)  # a smaller bound on restart: the slot is trimmed to it
    assert small.size == 0 and cache_files(folder) == []


def test_a_taken_over_slot_serves_what_its_last_owner_read(store: CountingBlocks, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    locations: Sequence[Location] = store.put([os.urandom(1000) for _ in range(5)])
    owner = CachedBlocks(store, folder, 1 << 20)
    for loc in locations:
        owner.get(loc)
    owner.close()
    heir = CachedBlocks(store, folder, 1 << 20)
    reads = store.reads
    assert [heir.get(loc) for loc in locations] == [store.get(loc) for loc in locations]
    assert store.reads == reads + len(locations)  # only the comparison's reads reached the store
    assert heir.size == disk_bytes(folder)


def test_a_live_process_keeps_its_slot(store: CountingBlocks, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from server_min.blocks.cache import "
         "CachedBlocks; from server_min.blocks.memory import MemoryBlocks; "
         "c = CachedBlocks(MemoryBlocks(), Path(sys.argv[1]), 1000); print(c.root, flush=True); sys.stdin.read()",
         str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        theirs = Path(child.stdout.readline().strip())
        mine = CachedBlocks(store, folder, 1000)
        assert mine.root != theirs and theirs.is_dir()  # neither taken over nor deleted while it lives
        mine.close()
    finally:
        child.communicate("", timeout=30)
    heir = CachedBlocks(store, folder, 1000)
    assert heir.root in (theirs, mine.root) and len(list(folder.glob("slot-*"))) == 1


@pytest.mark.parametrize("bad_reads", [1, 2])
def test_a_bad_read_the_cache_kept_is_read_again_before_it_is_called_damage(tmp_path: Path, bad_reads: int) -> None:
    """The cache keeps what the store answered, checked by its own xxh3 against the disk only. When the store
    answered wrong bytes once, the service's SHA-256 check fails on the cached copy: it drops it (forget) and
    reads the store itself once more. Only a second failure makes the block damaged."""
    store = BadReadBlocks()
    service = Service(MemoryMeta(), CachedBlocks(store, tmp_path / "cache", 1 << 20), MemoryNotifier())
    caller = service.authenticate(service.add_user("ann"))
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    service.blocks.store_pack(caller, encode_frames([Frame(sha, CODEC_RAW, data)]))
    store.bad = bad_reads
    if bad_reads == 1:
        assert service.blocks.read(caller, sha) == data
        assert service.meta.damaged_of([bytes.fromhex(sha)]) == set()
        reads = store.reads
        assert service.blocks.read(caller, sha) == data and store.reads == reads  # the good copy is cached now
    else:
        with pytest.raises(Damaged, match="SHA-256 does not match"):
            service.blocks.read(caller, sha)
        assert service.meta.damaged_of([bytes.fromhex(sha)]) == {bytes.fromhex(sha)}
