"""A bounded disk cache of recently read payloads, in front of any block store (an S3 bucket, mostly).

A wrapper, as restic wraps its backends: the store and the service know nothing of it. Only reads fill it
(an upload is rarely read back soon, and a cache that fills on writes would push out what is read). Each
payload is one file named after its Location (a location's bytes never change: a pack is written once), made
under a temp name and renamed into place, so a reader never sees half a file. The least recently read go
first once the files pass `max_bytes`. Nothing is fsynced: after a crash a file is whole, or it fails its
check and is read from the store again.

Why the cache checks its own files. The service checks every block's SHA-256 (rule 5), but it takes a
mismatch for damage in the store: the block is marked damaged in the metadata and its uploaders are asked
for it again. And blocks streamed to clients are not hashed on the server at all, only by the clients. So a
cache file damaged on the local disk must never get that far: each file carries the xxh3-128 of its payload,
checked on every hit (tens of GB/s), and a file that fails it, is cut short or is gone is dropped and read from
the store again: a miss, like any other. That leaves a wrong answer of the store itself, kept here faithfully:
when a payload fails its SHA-256, the service calls `forget` (BlockStore.forget) and reads once more before it
calls the block damaged, and that read comes from the store. `discard` drops the copies of its locations too.

Processes: each CachedBlocks takes a slot of its own under `folder` (`slot-*`, held by an flock), so no two
processes write the same index; a slot whose process has ended is taken over by the next one to start, warm,
and any other dead slot is deleted. `max_bytes` therefore bounds each process's slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import struct
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import xxhash

from server_min.blocks.base import BlockStore, Location

HEAD = struct.Struct(">4sQ16s")  # magic, payload length, xxh3-128 of the payload
MAGIC = b"BXC1"


class CachedBlocks:
    """`store`, with up to `max_bytes` of recently read payloads kept under `folder`; 0 turns the cache off."""

    def __init__(self, store: BlockStore, folder: Path, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max(0, max_bytes)
        self.size = 0  # bytes of the files in the index
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, int] = OrderedDict()  # file name -> its size, least recently read first
        self._lock = threading.Lock()
        self.root: Path | None = None
        if self.max_bytes:
            self.root, fd = _claim_slot(folder)
            self._unlock = weakref.finalize(self, os.close, fd)  # the slot is free again when this object goes
            self._tmp = self.root / "tmp"
            shutil.rmtree(self._tmp, ignore_errors=True)  # a dead owner's half-written files
            self._tmp.mkdir()
            self._load()

    def close(self) -> None:
        """Give up the slot (its files stay, for the next process to take over)."""
        if self.root is not None:
            self._unlock()

    def _load(self) -> None:
        """Index a taken-over slot's files, oldest first (their write time stands for their last read)."""
        assert self.root is not None
        found: list[tuple[int, str, int]] = []
        for index in range(256):
            folder = self.root / f"{index:02x}"
            folder.mkdir(exist_ok=True)
            with os.scandir(folder) as entries:
                for entry in entries:
                    st = entry.stat()
                    found.append((st.st_mtime_ns, entry.name, st.st_size))
        for _, name, size in sorted(found):
            self._entries[name] = size
            self.size += size
        self._unlink(self._evict())

    def _path(self, name: str) -> Path:
        assert self.root is not None
        return self.root / name[:2] / name

    def get(self, location: Location) -> bytes:
        """The payload at `location`: from the cache when it holds a sound copy, else from the store (and kept)."""
        if not self.max_bytes:
            return self.store.get(location)
        name = _name(location)
        data = self._read(name, location.length)
        if data is not None:
            return data
        data = self.store.get(location)
        self._keep(name, data)
        return data

    def _read(self, name: str, length: int) -> bytes | None:
        """The payload of cache file `name` if it is there and sound, else None (and a damaged file dropped)."""
        with self._lock:
            known = name in self._entries
            if known:
                self._entries.move_to_end(name)
        data = self._load_file(name, length) if known else None
        with self._lock:
            if data is None:
                self.misses += 1
            else:
                self.hits += 1
        if known and data is None:
            self.forget_names([name])
        return data

    def _load_file(self, name: str, length: int) -> bytes | None:
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
            try:
                head = os.pread(fd, HEAD.size, 0)
                data = os.pread(fd, length, HEAD.size)
            finally:
                os.close(fd)
            magic, size, digest = HEAD.unpack(head)
        except (OSError, struct.error):
            return None  # gone (evicted meanwhile, or removed by hand) or cut short
        if magic == MAGIC and size == length == len(data) and xxhash.xxh3_128_digest(data) == digest:
            return data
        return None

    def _keep(self, name: str, data: bytes) -> None:
        """Write `data` as cache file `name` (temp, rename), then evict the least recently read past the bound."""
        need = HEAD.size + len(data)
        if need > self.max_bytes:
            return
        temp = self._tmp / secrets.token_hex(8)
        try:
            with open(temp, "xb") as out:
                out.write(HEAD.pack(MAGIC, len(data), xxhash.xxh3_128_digest(data)))
                out.write(data)
            os.replace(temp, self._path(name))
        except OSError:  # a full or failing cache disk costs only the cache
            temp.unlink(missing_ok=True)
            return
        with self._lock:
            if name not in self._entries:
                self._entries[name] = need
                self.size += need
            self._entries.move_to_end(name)
            victims = self._evict()
        self._unlink(victims)

    def _evict(self) -> list[str]:
        """Take the least recently read entries out of the index until it fits (the caller unlinks them)."""
        victims = []
        while self.size > self.max_bytes and self._entries:
            victim, size = self._entries.popitem(last=False)
            self.size -= size
            victims.append(victim)
        return victims

    def _unlink(self, names: list[str]) -> None:
        for name in names:
            self._path(name).unlink(missing_ok=True)

    def forget(self, locations: Sequence[Location]) -> None:
        """Drop the cached copies of `locations`: the next read of each goes to the store."""
        if self.max_bytes:
            self.forget_names([_name(loc) for loc in locations])

    def forget_names(self, names: list[str]) -> None:
        """Drop cache files by name (see `forget`)."""
        with self._lock:
            for name in names:
                self.size -= self._entries.pop(name, 0)
        self._unlink(names)

    def put(self, payloads: Sequence[bytes | memoryview]) -> list[Location]:
        """Store `payloads` in the store (not cached: see the module's docstring)."""
        return self.store.put(payloads)

    def discard(self, locations: Sequence[Location]) -> None:
        """Discard `locations` in the store, and any copy of them here."""
        self.forget(locations)
        self.store.discard(locations)

    def drop_unfinished(self) -> None:
        """The store's own (this cache's half-written files went when it took its slot)."""
        self.store.drop_unfinished()


def _name(location: Location) -> str:
    """A cache file's name: a hash of the location (a pack name is opaque, and may hold any character)."""
    key = f"{len(location.pack)}:{location.pack}:{location.offset}:{location.length}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def _claim_slot(folder: Path) -> tuple[Path, int]:
    """A slot of `folder` for this process, and the fd holding its lock: a dead process's slot if there is one
    (warm), else a new one. Other dead slots are deleted: no one would ever bound them."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mine: tuple[Path, int] | None = None
    for slot in sorted(folder.glob("slot-*")):
        fd = _lock_slot(slot)
        if fd is None:
            continue  # a live process's
        if mine is None:
            mine = (slot, fd)
            continue
        trash = folder / f"trash-{secrets.token_hex(4)}"
        try:
            os.rename(slot, trash)  # under its lock: a process that opens it later finds no slot there
        except OSError:
            continue
        finally:
            os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
    while mine is None:
        slot = folder / f"slot-{secrets.token_hex(4)}"
        try:
            slot.mkdir(mode=0o700)
        except FileExistsError:
            continue
        fd = _lock_slot(slot)
        if fd is not None:  # else another process starting now took it first: make another
            mine = (slot, fd)
    return mine


def _lock_slot(slot: Path) -> int | None:
    """The fd of `slot`'s lock file, flocked, or None if a live process holds it (or the slot just went)."""
    path = slot / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:  # still the slot's lock, not one renamed away
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


__all__ = ["CachedBlocks"]
