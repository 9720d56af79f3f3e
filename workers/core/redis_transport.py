"""kombu's Redis transport, with the one change that lets a worker live through a Redis restart.

When Celery's consumer loses its broker connection it calls kombu's
``Connection.collect()``, which sets the transport's ``client`` to None, and then
closes the connection, whose channel gives its unacknowledged messages back by
opening a new Redis pool, built from ``transport.client``. That raises
``AttributeError: 'NoneType' object has no attribute 'hostname'``, which is no
connection error, so the worker stops with "Unrecoverable error" and every job
in flight stays ``running`` (the family of kombu #582 and #659). The same happens
to a job finishing on the old channel after the restart, when it acknowledges.

Here the transport keeps its last client: the old channels reach the same
broker again once it is back, and a job that finished meanwhile is acknowledged
instead of redelivered after the visibility timeout. ``install`` makes it the
transport of ``redis://``, ``rediss://`` and ``redis+socket://`` URLs, and
``SentinelTransport`` (kombu's Sentinel channel on the same fix) that of
``sentinel://`` URLs, under kombu's own names, so Celery, Flower and the logs
still see a Redis broker.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis

# redis+socket:// is looked up as "redis"
TRANSPORTS = {"redis": "flowcloud.workers.core.redis_transport:Transport",
              "rediss": "flowcloud.workers.core.redis_transport:Transport",
              "sentinel": "flowcloud.workers.core.redis_transport:SentinelTransport"}


class Transport(kombu_redis.Transport):
    @property
    def client(self) -> Any:
        return self._client

    @client.setter
    def client(self, value: Any) -> None:
        # collect() clears it to drop references; its channels may still be closed or acknowledge after.
        if value is not None or not hasattr(self, "_client"):
            self._client = value


class SentinelTransport(Transport):
    """kombu's Sentinel transport: every connection its channels open asks the sentinels for the primary,
    so after a failover the old channels reach the promoted replica, as above they reach a restarted Redis."""

    default_port = kombu_redis.SentinelTransport.default_port
    Channel = kombu_redis.SentinelChannel


def install() -> None:
    """Serve the Redis schemes with these transports in this process (kombu's alias table and its cache)."""
    for scheme, path in TRANSPORTS.items():
        kombu.transport.TRANSPORT_ALIASES[scheme] = path
        kombu.transport._transport_cache.pop(scheme, None)
