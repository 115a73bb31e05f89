"""Wake-ups across server processes through Redis pub/sub (see notify.bus).

Each process holds one subscribed connection, named with CLIENT SETNAME, in the listener thread;
publishes are a PUBLISH on the client's pool (one round trip). Pub/sub channels are global to a Redis
server, whatever the database number: deployments sharing one Redis need channels of their own.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from server_min.notify.bus import DEFAULT_CHANNEL, POLL, BusNotifier

SEND_TIMEOUT = 2.0  # seconds a publish may take (connecting included) before it gives up
_names = itertools.count(1)


def where(url: str) -> str:
    """A Redis URL for log lines: host, port and database, never a password."""
    kwargs = redis.connection.parse_url(url)
    return f"redis {kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class RedisBus:
    """PUBLISH from a pooled client, SUBSCRIBE on one connection of its own."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.name = f"box-notify-{os.getpid()}-{next(_names)}"  # the listener's CLIENT SETNAME
        self.where = f"{where(url)} channel {channel}"
        # Fails fast: a commit's thread waits seconds at most, never for a Redis that is gone.
        self._client = redis.Redis.from_url(url, client_name=f"{self.name}-send", socket_keepalive=True,
                                            socket_connect_timeout=SEND_TIMEOUT, socket_timeout=SEND_TIMEOUT)

    def send(self, payload: str) -> None:
        self._client.publish(self.channel, payload)

    def listen(self, deliver: Callable[[str], None], listening: Callable[[], None],
               stop: threading.Event) -> None:
        # No retries inside redis-py: the bus's own loop reconnects, with backoff. Health checks (a
        # PING when idle) notice a connection that died without a word.
        listener = redis.Redis.from_url(self.url, client_name=self.name, socket_connect_timeout=SEND_TIMEOUT,
                                        socket_keepalive=True, health_check_interval=15,
                                        retry=Retry(NoBackoff(), 0))
        pubsub = listener.pubsub()
        try:
            pubsub.subscribe(self.channel)
            while not stop.is_set():
                message = pubsub.get_message(timeout=POLL)
                if message is None:
                    continue
                if message["type"] == "subscribe":  # also after a reconnection redis-py made on its own
                    listening()
                elif message["type"] == "message":
                    data = message["data"]
                    deliver(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
        finally:
            pubsub.close()
            listener.close()

    def close(self) -> None:
        self._client.close()


class RedisNotifier(BusNotifier):
    """The Notifier of several processes sharing a Redis server."""

    def __init__(self, url: str, channel: str = DEFAULT_CHANNEL, connect_timeout: float = 10.0) -> None:
        super().__init__(RedisBus(url, channel), connect_timeout)


__all__ = ["RedisBus", "RedisNotifier"]
