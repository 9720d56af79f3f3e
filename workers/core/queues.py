"""How many messages wait in each of Celery's queues, asked of the broker that holds them.

Read by the metrics endpoint's queue gauges and Beat's backlog check. On Redis
a queue is a list (and its priority siblings); on RabbitMQ it is asked with a
passive declare, which reports the ready messages and creates nothing (a queue
no worker has declared yet holds none). Neither counts a countdown waiting in
RabbitMQ's delayed-delivery queues, nor the messages workers hold unacked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowcloud.workers.core import broker
from flowcloud.workers.core.redis_conn import connect

if TYPE_CHECKING:
    from flowcloud.workers.core.config import Config

# kombu's Redis transport keeps a queue's prioritised messages in sibling lists: <queue>\x06\x16<step>.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
AMQP_CONNECT_TIMEOUT = 2.0


def queue_lengths(config: Config, queues: list[str], redis_client: Any = None) -> dict[str, int]:
    """Messages waiting in each of ``queues`` on ``config``'s broker. ``redis_client``: a client of
    ``redis_url`` already at hand, used when that Redis is the broker."""
    url = config.broker_url_or_redis()
    if broker.kind_of(url) is broker.BrokerKind.RABBITMQ:
        return amqp_lengths(url, queues)
    if redis_client is None or url != config.redis_url_or_embedded():
        redis_client = connect(url)
    return redis_lengths(redis_client, queues)


def redis_lengths(client: Any, queues: list[str]) -> dict[str, int]:
    """Messages waiting in each queue, its priority siblings included, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for step in PRIORITY_STEPS:
            pipe.llen(queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}")
    sizes = pipe.execute()
    per_queue = len(PRIORITY_STEPS)
    return {queue: sum(sizes[i * per_queue:(i + 1) * per_queue]) for i, queue in enumerate(queues)}


def amqp_lengths(url: str, queues: list[str]) -> dict[str, int]:
    """Ready messages in each queue on RabbitMQ, on one connection."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    lengths = {}
    with Connection(url, connect_timeout=AMQP_CONNECT_TIMEOUT) as connection:
        channel = connection.channel()
        for queue in queues:
            try:
                lengths[queue] = channel.queue_declare(queue, passive=True).message_count
            except NotFound:  # not declared yet: nothing waits in it; the broker closed the channel
                lengths[queue] = 0
                channel = connection.channel()
    return lengths
