"""The broker's kind, and the Celery settings and limits that depend on it.

flowcloud's messages go through Redis (the default: the Redis that holds
everything else) or RabbitMQ (``broker_url: amqp://...``). Whatever the broker,
Redis keeps the records, the results, the cache, the limits and the budgets:
only where Celery's messages wait changes. What differs between the two is
decided here, once; nothing else asks which broker it runs on except through
these functions.

- Redis: kombu's Redis transport (its Sentinel transport for a group that
  ``redis_url`` names), with flowcloud's fix for a Redis restart
  (``redis_transport``); an unacknowledged message comes back after the
  visibility timeout, so flowcloud's sweeper (``workers/redelivery.py``) runs.
- RabbitMQ: quorum queues (replicated, and the only kind whose messages
  survive a node's loss), on topic exchanges so that Celery's native delayed
  delivery can route a countdown through its ``celery_delayed_*`` queues
  instead of a worker holding it in memory. Quorum queues have no global QoS:
  Celery sees them (``worker_detect_quorum_queues``) and keeps the prefetch per
  consumer. An unacknowledged message returns as soon as its connection drops.

Light: Celery alone; kombu's Redis transport only when a Redis broker needs it.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import TYPE_CHECKING, Any, Iterable

from celery import Celery

from flowcloud.workers.core import redis_sentinel

if TYPE_CHECKING:
    from flowcloud.workers.core.config import Config


class BrokerKind(str, Enum):
    REDIS = "redis"
    RABBITMQ = "rabbitmq"


# Schemes a configured broker_url may use. redis+socket:// (the embedded Redis) is never configured
# as a broker of its own: it is the broker only by following redis_url.
SCHEMES = {"redis": BrokerKind.REDIS, "rediss": BrokerKind.REDIS,
           "amqp": BrokerKind.RABBITMQ, "amqps": BrokerKind.RABBITMQ}
FOLLOWED_SCHEMES = {**SCHEMES, "redis+socket": BrokerKind.REDIS, "socket": BrokerKind.REDIS,
                    "sentinel": BrokerKind.REDIS}
QUORUM = {"x-queue-type": "quorum"}


def check_url(url: str) -> str:
    """``url`` if its scheme names a broker flowcloud runs on; else ``ValueError`` (the configuration's
    validation names the field)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        # Only the scheme is quoted: the rest of a broker URL may hold its password.
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise ValueError(f"{shown} is no broker flowcloud runs on (use redis://, rediss://, amqp:// or amqps://; "
                         f"unset: the Redis of redis_url)")
    return url


def kind_of(url: str) -> BrokerKind:
    """The kind of broker at ``url``: RabbitMQ for amqp(s)://, else Redis."""
    return FOLLOWED_SCHEMES.get(url.partition("://")[0].lower(), BrokerKind.REDIS)


def kind(config: Config) -> BrokerKind:
    return kind_of(config.broker_url_or_redis())


def celery_settings(config: Config, queues: Iterable[str]) -> dict:
    """The Celery settings of ``config``'s broker for ``queues`` (the first is the default queue).

    For Redis it also installs flowcloud's Redis transport in this process, before any app connects."""
    if kind(config) is BrokerKind.RABBITMQ:
        return rabbitmq_settings(config, list(queues))
    from flowcloud.workers.core import redis_transport  # kombu's Redis transport: only a Redis broker's

    redis_transport.install()
    # Unacked messages come back after this long; retry countdowns stay well below it. A Sentinel group's
    # master_name goes here too, where kombu and Flower read it.
    return {"broker_transport_options": {"visibility_timeout": config.worker.visibility_timeout,
                                         **redis_sentinel.transport_options(config.broker_url_or_redis())}}


def rabbitmq_settings(config: Config, queues: list[str]) -> dict:
    from kombu import Exchange, Queue

    return {
        # Every queue flowcloud knows is a quorum queue on a topic exchange of its name: native delayed
        # delivery binds each one to its delivery exchange and skips direct exchanges.
        "task_queues": [Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=QUORUM)
                        for name in queues],
        "task_default_exchange_type": "topic",
        "task_default_queue_type": "quorum",
        "task_create_missing_queue_type": "quorum",
        "task_create_missing_queue_exchange_type": "topic",
        "broker_native_delayed_delivery_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
        # A submitted job is queued once RabbitMQ has it: publish waits for the broker's confirm.
        "broker_transport_options": {"confirm_publish": True},
        # Set outright, so TLS options derived from redis_url never reach the AMQP connection.
        "broker_use_ssl": config.broker_url_or_redis().lower().startswith("amqps://"),
    }


def least_countdown(url: str, seconds: float | None) -> float | None:
    """``seconds`` as a countdown the broker at ``url`` can keep. RabbitMQ's delayed delivery counts
    whole seconds (Celery truncates, and refuses a countdown under one): rounded up, so the whole wait
    is spent in the broker, never earlier than asked, instead of its fraction in a worker's memory, where
    it would hold one of the consumer's fixed prefetch slots. None or 0 is sent at once."""
    if not seconds or seconds <= 0 or kind_of(url) is not BrokerKind.RABBITMQ:
        return seconds
    return float(math.ceil(seconds))


def declare_queues(app: Celery) -> None:
    """On RabbitMQ, declare every queue the app knows, also those this worker does not consume: the
    worker's native delayed delivery binds all of them to its exchanges, and gives up binding (the
    countdowns of every queue then wait in workers' memory) when one's exchange does not exist yet.
    Nothing to do on Redis."""
    if kind_of(app.conf.broker_url) is not BrokerKind.RABBITMQ:
        return
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()


class App(Celery):
    """Celery, with every countdown one the broker can keep: each task's message, its retries and the
    messages of jobs sent on from a bundle all go through ``send_task``. (flowcloud sends no ``eta``.)"""

    def send_task(self, *args: Any, **options: Any) -> Any:
        if options.get("countdown"):
            options["countdown"] = least_countdown(self.conf.broker_url, options["countdown"])
        return super().send_task(*args, **options)


def sweeps_unacked(config: Config) -> bool:
    """Whether flowcloud's sweeper must bring back a dead worker's messages: on Redis they wait for the
    visibility timeout and someone to sweep; RabbitMQ returns them when the connection drops."""
    return kind(config) is BrokerKind.REDIS

