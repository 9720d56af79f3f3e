"""Connections to the Redis that serves as broker, result store and shared state.

Celery spells a unix socket ``redis+socket:///path``; redis-py spells it
``unix:///path``. This module hides the difference and turns "nobody listens"
into an error that says what to do. It also holds the scripts for keys that
one owner holds at a time (locks, flights, claims), which every such key shares.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flowcloud.workers.core.errors import BrokerUnavailable

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

CELERY_SOCKET_SCHEMES = ("redis+socket://", "socket://")

# KEYS: a key one owner holds (its value is the owner). ARGV: the owner.
# Deletes the key only while that owner still holds it: a holder whose key expired and was
# taken by another must not drop the other's. Returns 1 when deleted, else 0.
RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: a key one owner holds. ARGV: the owner, seconds. Renews the key's TTL only while that owner holds it.
EXTEND_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


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
# A Redis restart or failover takes seconds. Through it every command retries (a record written after
# a provider call, a client waiting on a result) for about 30 s, instead of failing a job whose answer
# is already in hand: 40 tries, 0.5 to 1 s apart once the backoff reaches its cap.
RIDE_OUT_TRIES = 40


@functools.lru_cache(maxsize=8)
def connect(url: str) -> redis.Redis:
    """A pooled client for ``url`` (shared per process), checked with a PING."""
    import redis  # ~0.2 s: paid by the first job, not by every Langflow start that loads our nodes

    # redis-py 8 caps a pool at 100 connections and then raises: a threads worker holds one per
    # thread writing a record at that moment, and a client one per waiting result().
    from redis.backoff import EqualJitterBackoff, NoBackoff
    from redis.retry import Retry

    # Checked once without retrying, so that a Redis that is not there is said at once.
    client = redis.Redis.from_url(client_url(url), decode_responses=True, health_check_interval=30,
                                  max_connections=MAX_CONNECTIONS, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except (redis.ConnectionError, FileNotFoundError, OSError) as exc:
        connect.cache_clear()
        raise BrokerUnavailable(
            f"cannot reach Redis at {display_url(url)}: start the local stack with `flowcloud up` "
            "or point FLOWCLOUD_REDIS_URL at a running Redis"
        ) from exc
    client.set_retry(Retry(EqualJitterBackoff(cap=1.0, base=0.05), RIDE_OUT_TRIES))
    return client


def queue_script(pipe: redis.client.Pipeline, script: Script, keys: list[Any], args: list[Any],
                 ) -> Callable[[Any], Any]:
    """Queue ``script`` on ``pipe`` by its SHA alone; returns what turns its reply into its result.

    redis-py's own way, ``script(client=pipe)``, asks Redis whether the script is
    loaded before every execute: a second round trip. Here a script Redis does not
    know (it restarted) replies NoScriptError, and is then run on its own, which loads it.
    Run the pipeline with ``replies_of``.
    """
    pipe.evalsha(script.sha, len(keys), *keys, *args)

    def result(reply: Any) -> Any:
        from redis.exceptions import NoScriptError

        if isinstance(reply, NoScriptError):
            return script(keys=keys, args=args)
        return checked(reply)

    return result


def replies_of(pipe: redis.client.Pipeline) -> Iterator[Any]:
    """Execute ``pipe``; its replies in order, errors among them as values (``checked`` raises them)."""
    return iter(pipe.execute(raise_on_error=False))


def checked(reply: Any) -> Any:
    """One reply of ``replies_of``, raised if it is an error."""
    if isinstance(reply, Exception):
        raise reply
    return reply
