"""Block-store throughput: put and get of TOTAL MiB in packs of one 4 MiB payload, on LocalBlocks, on
S3Blocks over a local SeaweedFS (tests/s3.py), and through CachedBlocks (a second read, from the cache).

    .venv/bin/python -m bench.blocks_s3 [--mib 256] [--threads 1,4]

A quick measurement for issue 20, not a timed test: loopback S3 costs HTTP and SeaweedFS's own CPU, which
on a small machine share the cores with this process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from server_min.blocks.base import BlockStore, Location
from server_min.blocks.cache import CachedBlocks
from server_min.blocks.local import LocalBlocks
from server_min.blocks.s3 import MiB, S3Blocks
from tests.s3 import S3Server

PAYLOAD = 4 * MiB


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def run(name: str, store: BlockStore, payloads: list[bytes], threads: int) -> None:
    """Put every payload as its own pack, then read each back; print MiB/s of each."""
    total = sum(len(p) for p in payloads) / MiB
    locations: list[Location] = []
    with ThreadPoolExecutor(threads) as pool:
        put = timed(lambda: locations.extend(loc for locs in pool.map(lambda p: store.put([p]), payloads)
                                             for loc in locs))
        got: list[bytes] = []
        get = timed(lambda: got.extend(pool.map(store.get, locations)))
        assert got == payloads
        again = timed(lambda: list(pool.map(store.get, locations)))
    print(f"{name:<28} threads {threads}  put {total / put:7.0f} MiB/s  get {total / get:7.0f} MiB/s  "
          f"get again {total / again:7.0f} MiB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--threads", default="1,4")
    args = parser.parse_args()
    payloads = [os.urandom(PAYLOAD) for _ in range(args.mib * MiB // PAYLOAD)]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp, S3Server(Path(tmp) / "s3") as s3:
        os.environ.update(s3.env())
        s3.make_bucket("bench")
        for threads in (int(t) for t in args.threads.split(",")):
            run("local", LocalBlocks(Path(tmp) / f"local-{threads}"), payloads, threads)
            s3store = S3Blocks("bench", f"run-{threads}", endpoint=s3.endpoint)
            run("s3 (seaweedfs)", s3store, payloads, threads)
            cached = CachedBlocks(s3store, Path(tmp) / f"cache-{threads}", 2 * args.mib * MiB)
            run("s3 + cache", cached, payloads, threads)
            cached.close()


if __name__ == "__main__":
    main()
