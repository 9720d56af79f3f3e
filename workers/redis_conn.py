"""Connections to the Redis that serves as broker, result store and shared state.

Celery spells a unix socket ``redis+socket:///path``; redis-py spells it
``unix:///path``. This module hides the difference and turns "nobody listens"
into an error that says what to do.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from workers.errors import BrokerUnavailable

if TYPE_CHECKING:
    import redis

CELERY_SOCKET_SCHEMES = ("redis+socket://", "socket://")


def client_url(url: str) -> str:
    for scheme in CELERY_SOCKET_SCHEMES:
        if url.startswith(scheme):
            return "unix://" + url[len(scheme):]
    return url


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


MAX_CONNECTIONS = 20_000  # above any worker's concurrency; Redis's own maxclients is 10,000 by default


@functools.lru_cache(maxsize=8)
def connect(url: str) -> redis.Redis:
    """A pooled client for ``url`` (shared per process), checked with a PING."""
    import redis  # ~0.2 s: paid by the first job, not by every Langflow start that loads our nodes

    # redis-py 8 caps a pool at 100 connections and then raises: a threads worker holds one per
    # thread writing a record at that moment, and a client one per waiting result().
    client = redis.Redis.from_url(client_url(url), decode_responses=True, health_check_interval=30,
                                  max_connections=MAX_CONNECTIONS)
    try:
        client.ping()
    except (redis.ConnectionError, FileNotFoundError, OSError) as exc:
        connect.cache_clear()
        raise BrokerUnavailable(
            f"cannot reach Redis at {display_url(url)}: start the local stack with `flowcloud up` "
            "or point FLOWCLOUD_REDIS_URL at a running Redis"
        ) from exc
    return client
