"""RabbitMQ as broker: what differs from Redis, on the local RabbitMQ in the session's own vhost.

The tests every broker must pass (submit and result, a 429 with Retry-After, bundles, a killed
worker) take the ``broker`` fixture of tests/conftest.py and run on both; these run on RabbitMQ
alone (or need none): the configuration, quorum queues, native delayed delivery and queue lengths.
"""

import os
import time

import pytest

from flowcloud import client
from flowcloud.workers.core import broker as brokers
from flowcloud.workers.core.config import get_config, load_config, redacted
from flowcloud.workers.core.errors import ConfigError
from flowcloud.workers.core.queues import amqp_lengths, queue_lengths
from tests.conftest import RABBITMQ_QUEUES

on_rabbitmq = pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)
DELAYED_QUEUES = [queue for queue in RABBITMQ_QUEUES if queue.startswith("celery_delayed_")]


def with_broker(url: str):
    return load_config({**os.environ, "FLOWCLOUD_BROKER_URL": url})


@pytest.mark.parametrize("url", ["redis://h:6379/1", "rediss://h:6380/0", "amqp://u:p@h:5672/v", "amqps://h/v"])
def test_broker_url_takes_redis_or_rabbitmq(url):
    assert with_broker(url).broker_url_or_redis() == url


@pytest.mark.parametrize("url", ["kafka://h:9092", "sqs://", "redis+socket:///tmp/r.sock", "127.0.0.1:5672"])
def test_any_other_broker_url_is_refused_naming_the_field_and_the_fix(url):
    with pytest.raises(ConfigError) as refused:
        with_broker(url)
    assert refused.value.field == "broker_url (from $FLOWCLOUD_BROKER_URL)"
    assert "amqp://" in refused.value.reason and "redis://" in refused.value.reason


def test_the_broker_follows_redis_url_unless_set_and_its_password_is_hidden():
    config = get_config()
    assert config.broker_url is None and config.broker_url_or_redis() == config.redis_url_or_embedded()
    assert redacted(with_broker("amqp://guest:secret@h:5672/v"))["broker_url"] == "amqp://guest:***@h:5672/v"


def test_rabbitmq_gets_quorum_queues_on_topic_exchanges_and_native_delayed_delivery():
    from flowcloud.workers.core.celery_app import celery_settings  # once the tests' configuration is in place

    settings = celery_settings(with_broker("amqp://guest:guest@h:5672/v"))
    assert settings["broker_url"] == "amqp://guest:guest@h:5672/v"
    assert settings["result_backend"] == get_config().redis_url_or_embedded()  # results stay in Redis
    queues = {queue.name: queue for queue in settings["task_queues"]}
    assert list(queues) == ["flowcloud", "flowcloud.flows", "flowcloud.checks"]
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} and q.exchange.type == "topic" and
               q.exchange.name == q.routing_key == q.name for q in queues.values())
    assert settings["broker_native_delayed_delivery_queue_type"] == "quorum"
    assert settings["worker_detect_quorum_queues"] is True
    assert "visibility_timeout" not in settings["broker_transport_options"]

    on_redis = celery_settings(get_config())
    assert on_redis["broker_transport_options"] == {"visibility_timeout": get_config().worker.visibility_timeout}
    assert "task_queues" not in on_redis


def test_countdowns_on_rabbitmq_are_whole_seconds_never_shorter():
    rabbit, redis = "amqp://h/v", "redis://h"
    assert [brokers.least_countdown(rabbit, s) for s in (None, 0, 0.25, 1.0, 1.2, 7.9)] == [None, 0, 1, 1, 2, 8]
    assert [brokers.least_countdown(redis, s) for s in (None, 0, 0.25, 1.2)] == [None, 0, 0.25, 1.2]
    assert brokers.sweeps_unacked(get_config()) and not brokers.sweeps_unacked(with_broker(rabbit))


def delayed_messages(url: str) -> int:
    return sum(amqp_lengths(url, DELAYED_QUEUES).values())


@on_rabbitmq
def test_a_retry_after_countdown_waits_in_rabbitmqs_delayed_queues_not_in_a_worker(broker, start_worker, simulator,
                                                                                rabbitmq_url, tag):
    worker = start_worker(concurrency=1)
    job = client.submit(f"later {tag} [[sim:429;times=1;retry-after=3]]")
    seen, deadline = 0, time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        seen = delayed_messages(rabbitmq_url)
        time.sleep(0.1)
    assert seen == 1, "the countdown never reached the delayed-delivery queues"
    # Meanwhile the one slot is free: the countdown is in RabbitMQ, not held by the worker.
    quick = client.result(client.submit(f"quick {tag}"), timeout=30)
    record = client.result(job, timeout=30)
    assert record["status"] == quick["status"] == "succeeded" and record["attempts"] == 2
    assert quick["finished_at"] < record["finished_at"] and record["worker"] == worker.hostname
    calls = simulator.requests_log(f"later {tag}")
    assert [c["status"] for c in calls] == [429, 200] and calls[1]["t"] - calls[0]["t"] >= 3.0
    assert delayed_messages(rabbitmq_url) == 0
    assert "Global QoS is disabled" in worker.log()  # quorum queues: the prefetch is per consumer


@on_rabbitmq
def test_a_sub_second_wait_for_an_identical_job_is_a_one_second_countdown(broker, worker, simulator, tag):
    prompt = f"twin {tag} [[sim:slow;delay=1]]"
    first, second = client.submit(prompt), client.submit(prompt)  # the second waits 0.25 s on the first's flight
    records = client.wait_all([first, second], timeout=30)
    assert [r["status"] for r in records] == ["succeeded", "succeeded"]
    assert records[0]["text"] == records[1]["text"]
    assert len(simulator.requests_log(f"twin {tag}")) == 1


@on_rabbitmq
def test_queue_lengths_and_the_backlog_check_read_rabbitmqs_quorum_queues(broker, start_worker, rabbitmq_url, tag):
    from amqp.exceptions import PreconditionFailed
    from kombu import Connection

    from flowcloud.workers.alerts.checks import backlog
    from flowcloud.workers.core.config_sections import AlertSettings, BacklogAlert
    from flowcloud.workers.core.redis_conn import connect

    config = get_config()
    assert queue_lengths(config, ["flowcloud", "flowcloud.flows"]) == {"flowcloud": 0, "flowcloud.flows": 0}
    ids = [client.submit(f"waiting {i} {tag}") for i in range(5)]  # no worker yet: the client declared the queue
    assert queue_lengths(config, ["flowcloud", "flowcloud.flows"]) == {"flowcloud": 5, "flowcloud.flows": 0}
    checked = config.model_copy(update={"alerts": AlertSettings(backlog=BacklogAlert(threshold=3,
                                                                                     queues=["flowcloud"]))})
    [condition] = backlog(connect(config.redis_url_or_embedded()), checked, time.time())
    assert condition.firing and condition.details["waiting"] == 5

    with Connection(rabbitmq_url) as connection, pytest.raises(PreconditionFailed):
        connection.channel().queue_declare("flowcloud", durable=True)  # a classic queue of that name: refused
    start_worker()
    assert [r["status"] for r in client.wait_all(ids, timeout=30)] == ["succeeded"] * 5
    assert queue_lengths(config, ["flowcloud"]) == {"flowcloud": 0}
