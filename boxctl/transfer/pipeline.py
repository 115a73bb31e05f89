"""Ordered, bounded parallel map: the helper that lets reading and hashing overlap across cores."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(fn: Callable[[In], Out], items: Iterable[In], pool: ThreadPoolExecutor, ahead: int) -> Iterator[Out]:
    """`map(fn, items)` on `pool`, results in order, with at most `ahead` calls in flight.

    Unlike Executor.map it pulls `items` lazily, so memory stays bounded for endless inputs.
    """
    pending: deque[Future[Out]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
