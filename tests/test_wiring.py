"""server_min/wiring.py: the notifier and the login attempt log a deployment's URLs pick."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_min.errors import Unauthorized
from server_min.limits.memory import MemoryAttempts
from server_min.limits.postgres import PostgresAttempts
from server_min.limits.redis import RedisAttempts
from server_min.notify.memory import MemoryNotifier
from server_min.notify.postgres import PostgresNotifier
from server_min.notify.redis import RedisNotifier
from server_min.service.passwords import TooManyAttempts
from server_min.wiring import BadStoreUrl, StoreUrls, build_service, data_urls, open_attempts, open_notifier
from tests import bus_servers


def test_memory_is_the_default_for_both(tmp_path: Path) -> None:
    urls = data_urls(tmp_path / "data")
    assert isinstance(open_notifier(urls.notify, meta_url=urls.meta), MemoryNotifier)
    assert isinstance(open_attempts(urls.notify, urls.meta), MemoryAttempts)


def test_bare_postgresql_is_the_metadatas_database() -> None:
    bus_servers.pg_connect().close()
    notifier = open_notifier("postgresql", meta_url=bus_servers.PG_URL)
    try:
        assert isinstance(notifier, PostgresNotifier) and notifier.bus.channel == "box_wake"
    finally:
        notifier.close()
    with pytest.raises(BadStoreUrl, match="metadata is not on PostgreSQL"):
        open_notifier("postgresql", meta_url="sqlite:///tmp/meta.db")


def test_a_bus_url_may_name_its_channel() -> None:
    bus_servers.redis_connect().close()
    notifier = open_notifier(f"{bus_servers.REDIS_URL}?channel=box_wake_staging")
    try:
        assert isinstance(notifier, RedisNotifier) and notifier.bus.channel == "box_wake_staging"
        assert "channel" not in notifier.bus.url
    finally:
        notifier.close()
    bus_servers.pg_connect().close()
    notifier = open_notifier(f"{bus_servers.PG_URL}?channel=box_wake_staging")
    try:
        assert isinstance(notifier, PostgresNotifier) and notifier.bus.channel == "box_wake_staging"
    finally:
        notifier.close()
    with pytest.raises(BadStoreUrl, match="plain identifier"):
        open_notifier(f"{bus_servers.PG_URL}?channel=no-dashes")
    with pytest.raises(BadStoreUrl, match="unknown notifier"):
        open_notifier("amqp://localhost")


def test_the_attempt_log_is_where_every_process_sees_it() -> None:
    redis_log = open_attempts(bus_servers.REDIS_URL, "sqlite:///tmp/meta.db")
    pg_log = open_attempts("memory:", bus_servers.PG_URL)
    try:
        assert isinstance(redis_log, RedisAttempts) and isinstance(pg_log, PostgresAttempts)
        # Redis wins over PostgreSQL: the notifier's Redis is at hand, and cheaper per login.
        both = open_attempts(bus_servers.REDIS_URL, bus_servers.PG_URL)
        assert isinstance(both, RedisAttempts)
        both.close()
    finally:
        redis_log.close()
        pg_log.close()


def test_two_processes_wired_to_redis_share_the_password_limit(tmp_path: Path) -> None:
    bus_servers.redis_connect().close()
    local = data_urls(tmp_path / "data")
    (tmp_path / "data").mkdir()
    urls = StoreUrls(local.meta, local.blocks, f"{bus_servers.REDIS_URL}?channel={bus_servers.unique('box_wake')}")
    one, two = build_service(urls), build_service(urls)
    name, addr = bus_servers.unique("alice"), f"10.9.{id(urls) % 250}.1"
    try:
        one.add_user(name)
        one.accounts.set_password(name, "a long password")
        for i in range(5):  # 5 wrong passwords for one pair lock it (per_pair=5), split over two processes
            with pytest.raises(Unauthorized):
                (one, two)[i % 2].accounts.login(name, f"guess {i}", addr)
        with pytest.raises(TooManyAttempts):
            one.accounts.login(name, "a long password", addr)
    finally:
        log = one.attempts
        assert isinstance(log, RedisAttempts)
        for key in (f"user:{name.lower()}", f"addr:{addr}", f"pair:{name.lower()}\n{addr}"):
            log.forget(key)
        one.close()
        two.close()
