"""Connections to the Redis that serves as broker, result store and shared state.

Celery spells a unix socket ``redis+socket:///path``; redis-py spells it
``unix:///path``. This module hides the difference and turns "nobody listens",
"wrong password" and "TLS failed" into errors that say what to do, naming the
URL with its password hidden. A ``rediss://`` URL's TLS settings are its query
parameters, in the spelling redis-py, kombu and Celery's result backend all
accept; ``tls_options`` gives them to Celery as settings too, since Flower reads
them only from there. A ``sentinel://`` URL names a Sentinel group
(``redis_sentinel``): the client asks the sentinels for the primary on every
(re)connect, so it follows a failover. It also holds the scripts for keys that one owner holds
at a time (locks, flights, claims), which every such key shares.
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

from flowcloud.workers.core import guard, redis_sentinel
from flowcloud.workers.core.errors import BrokerUnavailable

if TYPE_CHECKING:
    import redis
    from redis.commands.core import Script

CELERY_SOCKET_SCHEMES = ("redis+socket://", "socket://")
SCHEMES = ("redis", "rediss", "redis+socket", "socket", redis_sentinel.SCHEME)
# Lower case only: redis-py refuses kombu's other spelling (CERT_REQUIRED). Unset means required, as in
# redis-py; kombu alone would fall back to no verification at all for a bare rediss:// URL.
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")

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
    """The URL with its password hidden (the user kept), for messages and ``config check``."""
    scheme, sep, rest = url.partition("://")
    query = rest.find("?")
    at = rest.rfind("@", 0, query if query >= 0 else len(rest))  # userinfo ends at the last @ before the query
    if not sep or at < 0:
        return url
    user, colon, _ = rest[:at].partition(":")
    # Without a colon the one field may well be a password written where the user goes.
    return f"{scheme}://{user}:***@{rest[at + 1:]}" if colon else f"{scheme}://***@{rest[at + 1:]}"


def password_of(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def check_url(url: str) -> None:
    """Raise ValueError (its text naming no password) when ``url`` is no Redis URL flowcloud can use."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"{display_url(url)} is not a Redis URL: use redis://, rediss:// (TLS), "
                         f"redis+socket:///path or {redis_sentinel.FORM}")
    params = tls_params(url)
    if scheme == redis_sentinel.SCHEME:
        redis_sentinel.parse(url)
        if params:
            raise ValueError(f"{', '.join(params)}: flowcloud reaches a Sentinel group without TLS; "
                             "keep it on the fleet's own network")
    if params and scheme != "rediss":
        raise ValueError(f"{', '.join(params)} apply to TLS only: write the URL as rediss://")
    unknown = sorted(set(params) - {"ssl_cert_reqs", *TLS_FILES})
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not supported (TLS settings: ssl_cert_reqs, "
                         f"{', '.join(TLS_FILES)})")
    if params.get("ssl_cert_reqs", "required") not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs={params['ssl_cert_reqs']} must be one of {', '.join(CERT_REQS)}")
    for name in TLS_FILES:
        if name in params and not Path(params[name]).is_file():
            raise ValueError(f"{name}={params[name]}: no such file")


def tls_params(url: str) -> dict[str, str]:
    """The ``ssl_*`` query parameters of ``url``."""
    return {key: value for key, value in parse_qsl(url.partition("?")[2]) if key.startswith("ssl_")}


def tls_options(url: str) -> dict[str, Any] | None:
    """For a ``rediss://`` URL, its TLS settings as Celery's ``broker_use_ssl`` and
    ``redis_backend_use_ssl`` take them (certificates required unless it says otherwise); else None."""
    if not url.startswith("rediss://"):
        return None
    params = tls_params(url)
    options: dict[str, Any] = {name: params[name] for name in TLS_FILES if params.get(name)}
    options["ssl_cert_reqs"] = CERT_REQS[params.get("ssl_cert_reqs", "required")]
    return options


def protect_password(url: str) -> None:
    """Have log lines and stored error messages of this process blank ``url``'s password."""
    guard.register_secret(password_of(url))


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

    protect_password(url)
    # Checked once without retrying, so that a Redis that is not there is said at once.
    options = {"decode_responses": True, "health_check_interval": 30, "max_connections": MAX_CONNECTIONS,
               "retry": Retry(NoBackoff(), 0)}
    client = sentinel_client(url, options) if redis_sentinel.is_sentinel(url) else \
        redis.Redis.from_url(client_url(url), **options)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        connect.cache_clear()
        raise unavailable(url, exc) from exc
    client.set_retry(Retry(EqualJitterBackoff(cap=1.0, base=0.05), RIDE_OUT_TRIES))
    return client


def sentinel_client(url: str, options: dict[str, Any]) -> redis.Redis:
    """A client of the group's primary: each connection asks the sentinels where it is, so a connection
    lost in a failover is made again to the replica they promoted, inside the same retried command."""
    from redis.sentinel import Sentinel

    group = redis_sentinel.parse(url)
    sentinels = Sentinel(list(group.sentinels), sentinel_kwargs={"socket_timeout": redis_sentinel.SENTINEL_TIMEOUT})
    return sentinels.master_for(group.master_name, db=group.db, **group.login(), **options)


def unavailable(url: str, exc: BaseException) -> BrokerUnavailable:
    """What a failed first PING of ``url`` means, as the error to raise."""
    import redis

    from redis.sentinel import MasterNotFoundError

    where, reason = display_url(url), guard.redact(str(exc))
    if isinstance(exc, MasterNotFoundError):
        return BrokerUnavailable(f"no sentinel of {where} named a primary ({reason}): check the sentinels' "
                                 "addresses and the master name their `sentinel monitor` line gives")
    if isinstance(exc, redis.AuthenticationError) or reason.startswith(("NOAUTH", "WRONGPASS")):
        return BrokerUnavailable(f"Redis at {where} refused the login ({reason}): check the user and password "
                                 "in redis_url")
    # A TLS client facing a server that does not answer TLS waits out the handshake: a timeout.
    if "SSL" in reason or (url.startswith("rediss://") and isinstance(exc, redis.TimeoutError)):
        return BrokerUnavailable(f"TLS to Redis at {where} failed ({reason}): check that it serves TLS on that "
                                 "port and the URL's ssl_ca_certs, ssl_certfile and ssl_keyfile")
    return BrokerUnavailable(f"cannot reach Redis at {where} ({reason}): start the local stack with "
                             "`flowcloud up` or point FLOWCLOUD_REDIS_URL at a running Redis")


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
