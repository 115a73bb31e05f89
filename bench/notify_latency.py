"""Wake-up latency of the notifiers (issue 20): publish on one instance, a long poll's waiter wakes on another.

    python -m bench.notify_latency                 # 200 wakes each: memory, postgres, redis
    python -m bench.notify_latency --n 1000 --json bench/results/notify-<date>.json

Two instances of a bus notifier on one channel stand for two server processes (each has its own
listening connection); memory is one process, one instance, the baseline. Each wake: a waiter registers
on the second instance, a worker thread (as a commit's request thread does) publishes on the first, and
the clock runs from just before publish() to the waiter's return on the event loop. Also timed: how long
publish() holds its caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from server_min.notify.base import Notifier

PG_URL = os.environ.get("BOX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BOX_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pair(kind: str) -> tuple[Notifier, Notifier]:
    """(publisher, waiter side): two processes' notifiers, or one memory notifier twice."""
    channel = f"box_wake_bench_{os.getpid()}"
    if kind == "postgres":
        from server_min.notify.postgres import PostgresNotifier

        return PostgresNotifier(PG_URL, channel), PostgresNotifier(PG_URL, channel)
    if kind == "redis":
        from server_min.notify.redis import RedisNotifier

        return RedisNotifier(REDIS_URL, channel), RedisNotifier(REDIS_URL, channel)
    from server_min.notify.memory import MemoryNotifier

    one = MemoryNotifier()
    return one, one


async def measure(publisher: Notifier, side: Notifier, n: int) -> tuple[list[float], list[float]]:
    wakes, calls = [], []
    for head in range(1, n + 1):
        with side.waiter(1, 1) as waiter:
            def publish(head: int = head) -> float:
                started = time.perf_counter()
                publisher.publish(1, head)
                calls.append(time.perf_counter() - started)
                return started

            sent = asyncio.get_running_loop().run_in_executor(None, publish)
            woken = await waiter.wait(5)
            arrived = time.perf_counter()
            assert woken == head, (woken, head)
            wakes.append(arrived - await sent)
    return wakes, calls


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered) * 1e6, 1),
            "p90_us": round(ordered[int(len(ordered) * 0.9)] * 1e6, 1),
            "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
            "max_us": round(ordered[-1] * 1e6, 1)}


def run(kinds: list[str], n: int, out: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in kinds:
        publisher, side = pair(kind)
        try:
            asyncio.run(measure(publisher, side, 10))  # warm: connections made, code paths hot
            wakes, calls = asyncio.run(measure(publisher, side, n))
        finally:
            publisher.close()
            if side is not publisher:
                side.close()
        results[kind] = {"wake": summary(wakes), "publish_call": summary(calls), "n": n}
        w, c = results[kind]["wake"], results[kind]["publish_call"]
        out(f"{kind:9} publish-to-wake median {w['median_us']:8.1f} us  p90 {w['p90_us']:8.1f}  "
            f"p99 {w['p99_us']:8.1f}  | publish() holds its caller: median {c['median_us']:7.1f} us  "
            f"p99 {c['p99_us']:7.1f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="wakes per notifier")
    parser.add_argument("--kinds", default="memory,postgres,redis")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    results = run(args.kinds.split(","), args.n)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
