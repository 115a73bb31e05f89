"""The notifiers of several processes (notify.postgres, notify.redis): two instances on one channel stand
for two server processes. Every wait is on an event (a waiter waking), never a sleep."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from server_min.notify.base import KICKED, LOOK_AGAIN
from server_min.notify.bus import BusNotifier, BusUnavailable
from tests import bus_servers
from tests.contract.conftest import open_notifier

Pair = tuple[BusNotifier, BusNotifier, Callable[[str], int]]


@pytest.fixture(params=["postgres", "redis"])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    """Two processes' notifiers on one channel, and how to kill a listener's connection by its name."""
    channel = bus_servers.unique("box_wake")
    first = open_notifier(request.param, channel)
    second = open_notifier(request.param, channel)
    assert isinstance(first, BusNotifier) and isinstance(second, BusNotifier)
    kill = bus_servers.pg_kill if request.param == "postgres" else bus_servers.redis_kill
    yield first, second, kill
    first.close()
    second.close()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_publish_wakes_the_waiters_of_every_process(pair: Pair) -> None:
    one, two, _ = pair

    async def scenario() -> tuple[object, ...]:
        with two.waiter(1, 10) as there, one.waiter(1, 11) as here, two.waiter(2, 10) as other_box:
            one.publish(1, 7)
            return await there.wait(5), await here.wait(5), await other_box.wait(0.05)

    assert run(scenario()) == (7, 7, None)


def test_a_kick_wakes_the_users_waiters_in_every_process(pair: Pair) -> None:
    one, two, _ = pair

    async def scenario() -> tuple[object, ...]:
        with two.waiter(1, 10) as a, two.waiter(2, 10) as b, two.waiter(1, 11) as someone_else:
            one.kick_user(10)
            return await a.wait(5), await b.wait(5), await someone_else.wait(0.05)

    assert run(scenario()) == (KICKED, KICKED, None)


def test_publishes_from_many_threads_all_arrive(pair: Pair) -> None:
    """Commits publish from their request threads, all at once."""
    one, two, _ = pair

    async def scenario() -> set[int]:
        seen: set[int] = set()
        with two.waiter(5, 10) as waiter:
            threads = [threading.Thread(target=one.publish, args=(5, head)) for head in range(1, 21)]
            for thread in threads:
                thread.start()
            while 20 not in seen:  # wake-ups collapse: the last one alone is sure to be seen
                woken = await waiter.wait(5)
                assert woken is not None, f"no wake-up after {sorted(seen)}"
                seen.add(woken)
            for thread in threads:
                thread.join()
        return seen

    # Heads may arrive out of order (several connections), but the highest one is never lost.
    assert 20 in run(scenario())


def test_a_lost_listener_reconnects_and_every_waiter_looks_again(pair: Pair) -> None:
    one, two, kill = pair

    async def scenario() -> tuple[object, object]:
        with two.waiter(1, 10) as waiting, two.waiter(9, 12) as elsewhere:
            assert await asyncio.to_thread(kill, two.bus.name) == 1
            # Whatever was sent while it was away, every waiter reads the head again.
            woken = await waiting.wait(15), await elsewhere.wait(15)
        assert two.reconnects >= 1
        with two.waiter(1, 10) as later:
            one.publish(1, 8)
            return woken, await later.wait(5)

    (first, second), later = run(scenario())  # type: ignore[misc]
    assert (first, second, later) == (LOOK_AGAIN, LOOK_AGAIN, 8)


def test_a_lost_sending_connection_does_not_lose_the_wake_up(pair: Pair) -> None:
    one, two, kill = pair
    warm = asyncio.run(_publish_and_wait(one, two, 3))  # the sending side has a connection now
    assert warm == 3
    assert kill(f"{one.bus.name}-send") >= 1
    assert asyncio.run(_publish_and_wait(one, two, 4)) == 4


async def _publish_and_wait(one: BusNotifier, two: BusNotifier, head: int) -> object:
    with two.waiter(3, 10) as waiter:
        await asyncio.to_thread(one.publish, 3, head)
        return await waiter.wait(5)


def test_bad_messages_are_ignored_with_a_log_line(pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    one, two, _ = pair

    async def scenario() -> object:
        with two.waiter(1, 10) as waiter:
            for bad in ("hello", "b:1", "b:x:2", "k:", "b:1:2:3", "k:-4"):
                one.bus.send(bad)
            one.publish(1, 6)
            return await waiter.wait(5)

    with caplog.at_level(logging.WARNING, logger="server_min.notify"):
        assert run(scenario()) == 6
    assert "ignoring a bad wake-up message" in caplog.text and "'b:x:2'" in caplog.text


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_an_unreachable_bus_fails_at_start_with_a_clear_message(kind: str) -> None:
    from server_min.notify.postgres import PostgresNotifier
    from server_min.notify.redis import RedisNotifier

    with pytest.raises(BusUnavailable, match="cannot listen on the wake-up bus"):
        if kind == "postgres":
            PostgresNotifier("postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=0.5)
        else:
            RedisNotifier("redis://127.0.0.1:1/0", connect_timeout=0.5)
