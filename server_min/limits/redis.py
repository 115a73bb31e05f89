"""The login attempt log in Redis, shared by every server process: one key per record, with a TTL.

An update is a WATCH/MULTI transaction (redis-py retries it when another process changed the key in
between), so the decision stays in service.passwords, in Python, for every store alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import redis

from server_min.limits.base import Attempts, digest

TIMEOUT = 2.0  # seconds a login waits for Redis before it fails (a 500 rather than a hung request)


def _decode(raw: bytes | None, now: float) -> Attempts | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        record = Attempts(tuple(float(t) for t in data["f"]), float(data["l"]), int(data["s"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):  # not ours, or damaged: as if absent
        return None
    return record if record.expires > now else None


def _encode(record: Attempts) -> str:
    return json.dumps({"f": record.failures, "l": record.locked_until, "s": record.strikes, "e": record.expires})


class RedisAttempts:
    """Records under `prefix` + the SHA-256 of their key."""

    def __init__(self, url: str, prefix: str = "box:attempts:") -> None:
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT,
                                            socket_keepalive=True, client_name="box-attempts")

    def _name(self, key: str) -> str:
        return self.prefix + digest(key).hex()

    def get(self, key: str, now: float) -> Attempts | None:
        return _decode(self._client.get(self._name(key)), now)

    def update(self, key: str, now: float, change: Callable[[Attempts | None], Attempts]) -> None:
        name = self._name(key)

        def apply(pipe: redis.client.Pipeline) -> None:
            record = change(_decode(pipe.get(name), now))  # read while watched, written under MULTI
            pipe.multi()
            # The TTL is relative, so Redis's own clock expires it; `expires` inside serves readers' `now`.
            ttl = math.ceil((record.expires - now) * 1000)
            if ttl > 0:
                pipe.set(name, _encode(record), px=ttl)
            else:
                pipe.delete(name)

        self._client.transaction(apply, name)

    def forget(self, key: str) -> None:
        self._client.delete(self._name(key))

    def close(self) -> None:
        self._client.close()


__all__ = ["RedisAttempts"]
