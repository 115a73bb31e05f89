"""server_min/service/wakeups.py: a long poll trusts no number a wake-up carries, it reads the head again;
and, over a shared bus, a commit on one server process answers the long polls of another."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server_min.service import Service
from server_min.wiring import StoreUrls, build_service, data_urls, memory_service
from tests import bus_servers

EMPTY_FILE = {"op": "put", "size": 0, "blocks": []}


def commit(service: Service, token: str, box: int, path: str) -> int:
    caller = service.authenticate(token)
    return int(service.commits.commit(caller, box, "m", None, [{"path": path, **EMPTY_FILE}])["seq"])


def test_a_wake_up_is_only_a_reason_to_read_the_head_again(monkeypatch: pytest.MonkeyPatch) -> None:
    service = memory_service()
    token = service.add_user("alice")
    caller = service.authenticate(token)
    box = int(service.boxes.create(caller, "docs", None)["id"])
    commit(service, token, box, "a.txt")
    reads: queue.Queue[int] = queue.Queue()  # every head the long poll read, as it reads it
    real_head = service.journal.head

    def head(*args: Any) -> int:
        value = real_head(*args)
        reads.put(value)
        return value

    monkeypatch.setattr(service.journal, "head", head)
    notifier: Any = service.notifier

    async def scenario() -> tuple[dict[str, Any], list[int]]:
        async def read() -> int:
            return await asyncio.to_thread(reads.get, timeout=5)

        poll = asyncio.create_task(service.wakeups.wait(token, caller.user_id, box, 1, 10))
        seen = [await read()]
        notifier.local.wake_all()  # a bus came back: LOOK_AGAIN, not a head
        seen.append(await read())
        notifier.publish(box, 99)  # a number the store does not back (a stray or forged message)
        seen.append(await read())
        await asyncio.to_thread(commit, service, token, box, "b.txt")
        seen.append(await read())
        return await asyncio.wait_for(poll, 5), seen

    answer, seen = asyncio.run(scenario())
    assert seen == [1, 1, 1, 2]  # read again at each wake-up, and only the store's head counts
    assert answer == {"changes": True, "head": 2, "backoff": 0}


@pytest.fixture(params=["postgres", "redis"])
def two_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """Two services over one data folder and one bus, as two server processes behind a load balancer."""
    channel = bus_servers.unique("box_wake")
    if request.param == "postgres":
        bus_servers.pg_connect().close()
        notify = f"{bus_servers.PG_URL}{'&' if '?' in bus_servers.PG_URL else '?'}channel={channel}"
    else:
        bus_servers.redis_connect().close()
        notify = f"{bus_servers.REDIS_URL}?channel={channel}"
    local = data_urls(tmp_path / "data")
    (tmp_path / "data").mkdir()
    urls = StoreUrls(local.meta, local.blocks, notify)
    one = build_service(urls)
    two = build_service(urls)
    yield one, two
    one.close()
    two.close()


def test_a_commit_on_one_process_answers_a_long_poll_on_another(two_processes: tuple[Service, Service]) -> None:
    one, two = two_processes
    token = one.add_user("alice")
    caller = one.authenticate(token)
    box = int(one.boxes.create(caller, "docs", None)["id"])

    async def scenario() -> dict[str, Any]:
        with two.notifier.waiter(box, caller.user_id) as watch:  # sees the commit's wake-up arrive in `two`
            poll = asyncio.create_task(two.wakeups.wait(token, caller.user_id, box, 0, 20))
            while two.notifier.waiting() < 2:  # the long poll registered (it does before its first read)
                await asyncio.sleep(0)
            await asyncio.to_thread(commit, one, token, box, "a.txt")
            assert await watch.wait(5) == 1
            return await asyncio.wait_for(poll, 5)

    assert asyncio.run(scenario()) == {"changes": True, "head": 1, "backoff": 0}
