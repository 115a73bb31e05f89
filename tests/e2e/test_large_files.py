"""Big files that change a little: delta uploads, block reuse on pull, and --bwlimit.

A few bytes changed in the middle of a file of tens of MB must cost a few KB on the wire (a delta
against the previous version's block), and the other device must rebuild it byte for byte from
the blocks it already holds, downloading only the new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boxctl.chunking import Chunker
from boxctl.transport import RateLimiter, parse_rate
from tests.conftest import Device
from tests.e2e.helpers import push

MB = 1 << 20
KB = 1 << 10


# --- helpers --------------------------------------------------------------------------------


def random_file(device: Device, rel: str, size: int, seed: int) -> Path:
    path = device.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


def text_file(device: Device, rel: str, size: int, seed: int) -> Path:
    """Compressible, text-like content: lines of words from a small vocabulary."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    vocab = [bytes(rng.choice(letters, int(n))) for n in rng.integers(2, 11, 4000)]
    words = rng.integers(0, len(vocab), size // 4)
    parts = []
    for i, w in enumerate(words.tolist()):
        parts.append(vocab[w])
        parts.append(b"\n" if i % 13 == 12 else b" ")
    data = b"".join(parts)[:size]
    path = device.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chunker(device: Device) -> Chunker:
    c = json.loads((device.root / ".box" / "config").read_text())
    return Chunker(c["min_size"], c["avg_size"], c["max_size"])


def new_blocks(device: Device, before: bytes, path: Path) -> tuple[int, int]:
    """How many blocks of `path` (and how many bytes) were not blocks of the file's earlier content."""
    old_file = device.root.parent / f"old-{device.name}.bin"
    old_file.write_bytes(before)
    cut = chunker(device)
    old = {b.digest for b in cut.blocks(old_file)}
    fresh = [len(b.data) for b in cut.blocks(path) if b.digest not in old]
    old_file.unlink()
    return len(fresh), sum(fresh)


def set_mtime(path: Path, offset_s: float) -> None:
    """Move a file's mtime `offset_s` seconds from now (negative: into the past)."""
    when = time.time_ns() + int(offset_s * 1e9)
    os.utime(path, ns=(when, when))


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def insert(path: Path, offset: int, data: bytes) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[:offset] + data + whole[offset:])


def pulled_blocks(device: Device, rel: str) -> list[bytes]:
    return [b.digest for b in chunker(device).blocks(device.root / rel)]


def pull_json(device: Device, *args: str) -> dict[str, Any]:
    return device.run("pull", "--json", *args).json()


def report(label: str, **figures: Any) -> None:
    print(f"[{label}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


PARAGRAPH = (b"\n\nThis paragraph was inserted in the middle of the file, long after it was first "
             b"synced. It shifts everything after it by a few hundred bytes, which a fixed-size block "
             b"scheme would pay for with the whole rest of the file; content-defined chunking keeps the "
             b"damage to one block, and the delta against that block's previous version keeps the cost "
             b"to about the size of this paragraph.\n\n")


# --- delta uploads --------------------------------------------------------------------------


def test_few_bytes_changed_in_a_large_file_go_up_as_a_small_delta(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    path = random_file(a, "disk/image.bin", 32 * MB, seed=1)
    push(a)
    b.run("pull")

    before = path.read_bytes()
    overwrite(path, 16 * MB + 12345, b"EDIT!")
    changed, changed_bytes = new_blocks(a, before, path)
    result = push(a)
    report("5-byte edit of 32 MB", changed_blocks=changed, changed_bytes=changed_bytes,
           bytes_sent=result["bytes_sent"], wire=result["wire_bytes_sent"], delta=result["blocks_delta"])
    assert result["modified"] == ["disk/image.bin"], result
    assert result["blocks_sent"] == changed and result["bytes_plain"] == changed_bytes, result
    assert result["blocks_delta"] >= 1, result
    # The changed block is ~1 MB of incompressible data; the delta is a few KB.
    assert result["bytes_sent"] < 16 * KB, result
    assert result["bytes_sent"] * 20 < changed_bytes, result
    assert result["wire_bytes_sent"] < 64 * KB, result

    pulled = pull_json(b)
    assert pulled["written"] == ["disk/image.bin"], pulled
    assert sha(b.root / "disk/image.bin") == sha(path)


def test_paragraph_inserted_in_a_text_file_goes_up_as_a_small_delta(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    path = text_file(a, "docs/book.txt", 24 * MB, seed=2)
    push(a)
    b.run("pull")

    before = path.read_bytes()
    insert(path, 12 * MB + 777, PARAGRAPH)
    changed, changed_bytes = new_blocks(a, before, path)
    result = push(a)
    report("paragraph inserted in 24 MB of text", changed_blocks=changed, changed_bytes=changed_bytes,
           bytes_sent=result["bytes_sent"], delta=result["blocks_delta"])
    assert result["blocks_sent"] == changed and result["blocks_delta"] >= 1, result
    # Far below the changed blocks, even compressed (text compresses about 2-3x with zstd).
    assert result["bytes_sent"] < 16 * KB, result
    assert result["bytes_sent"] * 20 < changed_bytes, result

    pull_json(b)
    assert b.read("docs/book.txt") == path.read_bytes()


def test_no_delta_sends_changed_blocks_whole(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    path = random_file(a, "disk/image.bin", 24 * MB, seed=3)
    push(a)
    b.run("pull")

    before = path.read_bytes()
    overwrite(path, 10 * MB, b"whole blocks, please")
    changed, changed_bytes = new_blocks(a, before, path)
    result = push(a, "--no-delta")
    report("--no-delta", changed_blocks=changed, changed_bytes=changed_bytes, bytes_sent=result["bytes_sent"],
           delta=result["blocks_delta"])
    assert result["blocks_sent"] == changed, result
    assert result["blocks_delta"] == 0, result
    assert result["bytes_sent"] >= changed_bytes, result  # random data goes raw, whole

    pull_json(b)
    assert sha(b.root / "disk/image.bin") == sha(path)

    # And without the flag, the next edit goes up as a delta again.
    overwrite(path, 5 * MB, b"delta again")
    again = push(a)
    assert again["blocks_delta"] >= 1 and again["bytes_sent"] < 16 * KB, again
    pull_json(b)
    assert sha(b.root / "disk/image.bin") == sha(path)


def test_delta_after_several_edits_in_a_row_stays_byte_exact(two_devices: tuple[Device, Device]) -> None:
    """Each push deltas against the version before it (whose block may itself have come as a delta)."""
    a, b = two_devices
    path = random_file(a, "data.bin", 16 * MB, seed=4)
    push(a)
    b.run("pull")
    rng = np.random.default_rng(5)
    sent = []
    for round_ in range(3):
        at = int(rng.integers(0, 16 * MB - 100))
        if round_ % 2:
            insert(path, at, rng.bytes(int(rng.integers(1, 300))))
        else:
            overwrite(path, at, rng.bytes(int(rng.integers(1, 50))))
        result = push(a)
        sent.append(result["bytes_sent"])
        assert result["blocks_delta"] >= 1, result
        pull_json(b)
        assert sha(b.root / "data.bin") == sha(path), f"round {round_}"
    report("3 edits in a row", bytes_sent=sent)
    assert max(sent) < 32 * KB, sent


def test_appended_data_is_not_deltaed_against_the_old_last_block(two_devices: tuple[Device, Device]) -> None:
    """Blocks past the old end of a file have no predecessor "at the same place": no signature of the
    old last block should be fetched (nor a delta computed) for each of them. A growing file (a log,
    a recording) otherwise pays a signature round trip and a futile delta per appended block."""
    a, b = two_devices
    path = random_file(a, "grow.bin", 3 * MB, seed=40)
    push(a)
    with open(path, "ab") as f:
        f.write(np.random.default_rng(41).bytes(24 * MB))
    result = push(a)
    report("24 MB appended to 3 MB", blocks_sent=result["blocks_sent"], delta=result["blocks_delta"],
           wire_received=result["wire_bytes_received"], seconds=result["seconds"])
    assert result["bytes_sent"] >= 24 * MB, result
    # The answers to the push: JSON, plus at most a couple of signatures (~6 KB each for a 1 MB block).
    assert result["wire_bytes_received"] < 48 * KB, result
    pull_json(b)
    assert sha(b.root / "grow.bin") == sha(path)


# --- block reuse on pull --------------------------------------------------------------------


def edited_file_pull(a: Device, b: Device, v1_mtime_offset: float) -> tuple[dict[str, Any], dict[str, Any], int]:
    """B has version 1 of a 30 MB file (its mtime moved by `v1_mtime_offset` s); A edits a little and
    pushes; B pulls. Returns (push, pull, blocks of version 1)."""
    path = random_file(a, "video/clip.bin", 30 * MB, seed=6)
    set_mtime(path, v1_mtime_offset)
    push(a)
    b.run("pull")
    blocks_before = sum(1 for _ in chunker(a).blocks(path))
    overwrite(path, 15 * MB, b"a few new bytes")
    with open(path, "ab") as f:
        f.write(np.random.default_rng(7).bytes(200 * KB))
    pushed = push(a)
    pulled = pull_json(b)
    assert pulled["written"] == ["video/clip.bin"], pulled
    assert b.read("video/clip.bin") == path.read_bytes()
    return pushed, pulled, blocks_before


def test_pull_of_an_edited_file_reuses_the_blocks_it_has(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    pushed, pulled, blocks_before = edited_file_pull(a, b, -3600)  # version 1 was last written an hour ago
    blocks_now = len(pulled_blocks(b, "video/clip.bin"))
    report("pull of an edited 30 MB file", blocks=blocks_now, reused=pulled["blocks_reused"],
           received=pulled["bytes_received"], new_plain=pushed["bytes_plain"])
    assert pulled["blocks_reused"] >= blocks_before - 3, pulled
    assert pulled["blocks_reused"] + pushed["blocks_sent"] >= blocks_now, (pulled, pushed)
    # Only the new blocks came down (plus the journal page): not the 30 MB.
    assert pulled["bytes_received"] <= pushed["bytes_plain"] + 256 * KB, (pulled, pushed)
    assert pulled["bytes_received"] < 8 * MB, pulled


def test_pull_reuses_the_blocks_of_a_file_synced_moments_ago(two_devices: tuple[Device, Device]) -> None:
    """A file whose mtime is within the index's 2 s "racily clean" window when it is synced (it was
    written a moment ago, or the other device's clock runs ahead, as here) still lends its blocks:
    every reused block is checked against its SHA-256 anyway."""
    a, b = two_devices
    pushed, pulled, blocks_before = edited_file_pull(a, b, +30)
    report("pull of an edited 30 MB file synced moments ago", blocks=blocks_before,
           reused=pulled["blocks_reused"], received=pulled["bytes_received"], new_plain=pushed["bytes_plain"])
    assert pulled["blocks_reused"] >= blocks_before - 3, pulled
    assert pulled["bytes_received"] < 8 * MB, pulled


def test_pull_of_a_copy_downloads_no_block(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    path = random_file(a, "video/clip.bin", 30 * MB, seed=8)
    set_mtime(path, -3600)
    push(a)
    b.run("pull")
    blocks = sum(1 for _ in chunker(a).blocks(path))

    (a.root / "backup").mkdir()
    shutil.copyfile(path, a.root / "backup" / "clip copy.bin")
    pushed = push(a)
    assert pushed["blocks_sent"] == 0 and pushed["bytes_sent"] == 0, pushed
    pulled = pull_json(b)
    report("pull of a 30 MB copy", blocks=blocks, reused=pulled["blocks_reused"],
           received=pulled["bytes_received"])
    assert "backup/clip copy.bin" in pulled["written"], pulled
    assert b.read("backup/clip copy.bin") == path.read_bytes()
    assert pulled["blocks_reused"] == blocks, pulled
    assert pulled["bytes_received"] < 64 * KB, pulled


def test_local_block_changed_since_sync_is_downloaded_not_reused(two_devices: tuple[Device, Device]) -> None:
    """A local file whose bytes changed after the last sync must not lend its (stale) blocks."""
    a, b = two_devices
    path = random_file(a, "v.bin", 12 * MB, seed=9)
    set_mtime(path, -3600)
    push(a)
    b.run("pull")
    # B overwrites its copy in place, same size, and puts the old mtime back: the index cannot tell,
    # but its blocks are stale.
    mine = b.root / "v.bin"
    st = mine.stat()
    overwrite(mine, 0, b"\0" * (12 * MB))
    os.utime(mine, ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copyfile(path, a.root / "v2.bin")
    push(a)
    pulled = pull_json(b)
    report("pull next to a stale local copy", reused=pulled["blocks_reused"], received=pulled["bytes_received"])
    assert b.read("v2.bin") == path.read_bytes()
    assert pulled["bytes_received"] >= 12 * MB, pulled  # every block failed its hash check: downloaded
    assert pulled["blocks_reused"] == 0, pulled  # and none is reported as reused


# --- bandwidth limit ------------------------------------------------------------------------


def test_bwlimit_paces_a_push_and_a_pull(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    random_file(a, "four.bin", 4 * MB, seed=10)
    started = time.monotonic()
    result = push(a, "--bwlimit", "1M")
    took = time.monotonic() - started
    report("push 4 MB at 1M", seconds=result["seconds"], wall=round(took, 2))
    assert result["seq"] is not None and result["bytes_sent"] >= 4 * MB
    assert result["seconds"] >= 3.0, result
    assert took >= 3.0

    started = time.monotonic()
    pulled = pull_json(b, "--bwlimit", "1024")  # plain numbers are KiB/s, as in rsync
    took = time.monotonic() - started
    report("pull 4 MB at 1024 KiB/s", wall=round(took, 2))
    assert pulled["written"] == ["four.bin"]
    assert took >= 3.0
    assert b.read("four.bin") == a.read("four.bin")


def test_bwlimit_is_shared_by_parallel_jobs(two_devices: tuple[Device, Device]) -> None:
    a, _ = two_devices
    for i in range(4):  # 16 MB: two upload batches or more, sent in parallel
        random_file(a, f"part{i}.bin", 4 * MB, seed=20 + i)
    started = time.monotonic()
    result = push(a, "--bwlimit", "4M", "--jobs", "4")
    took = time.monotonic() - started
    report("push 16 MB at 4M, 4 jobs", seconds=result["seconds"], wall=round(took, 2))
    assert result["bytes_sent"] >= 16 * MB
    assert result["seconds"] >= 3.0, result


def test_rate_limiter_and_rate_parsing() -> None:
    assert parse_rate("1M") == MB and parse_rate("1024") == MB and parse_rate("500K") == 500 * KB
    assert parse_rate("2m") == 2 * MB and parse_rate("1G") == 1 << 30 and parse_rate("0") is None
    limiter = RateLimiter(4 * MB)
    started = time.monotonic()

    def spend() -> None:
        for _ in range(16):
            limiter.spend(64 * KB)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4 MB through a 4 MB/s bucket shared by 4 threads: about a second, not a quarter of one.
    assert time.monotonic() - started >= 0.9


@pytest.mark.slow
def test_delta_of_a_50mb_file_with_edits_in_many_places(two_devices: tuple[Device, Device]) -> None:
    a, b = two_devices
    path = random_file(a, "big.bin", 50 * MB, seed=30)
    set_mtime(path, -3600)  # not written moments ago: B's copy can lend its blocks (see the test above)
    push(a)
    b.run("pull")
    before = path.read_bytes()
    for at in range(2 * MB, 50 * MB, 6 * MB):  # 8 edits, each in its own block
        overwrite(path, at, b"#" * 40)
    changed, changed_bytes = new_blocks(a, before, path)
    result = push(a)
    report("8 edits in 50 MB", changed_blocks=changed, changed_bytes=changed_bytes,
           bytes_sent=result["bytes_sent"], delta=result["blocks_delta"])
    assert result["blocks_delta"] >= changed - 1, result
    assert result["bytes_sent"] < changed * 16 * KB, result
    pulled = pull_json(b)
    assert sha(b.root / "big.bin") == sha(path)
    assert pulled["bytes_received"] < changed_bytes + 256 * KB, pulled
