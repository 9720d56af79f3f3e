"""The Celery application and every Celery setting flowcloud uses, in one place.

Light on purpose: it imports no task modules, so the client, Beat and Flower
can import it to send messages without pulling in the engine. Workers run
``flowcloud.tasks``, which imports this app and registers every task on it.
Beat builds its own app here too (``create_app`` with its schedule and
``beat_settings``): no module edits an app once it is built.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from flowcloud.workers.core.config import Config, get_config
from flowcloud.workers.core import broker, redis_conn, redis_sentinel
from flowcloud.workers.core.redis_conn import RIDE_OUT_TRIES, client_url

COMPLETE_TASK = "flowcloud.complete"
EMBED_TASK = "flowcloud.embed"
# Many completion or embedding jobs in one message (flowcloud.tasks.bundle): how client.submit_many sends them.
BUNDLE_TASK = "flowcloud.bundle"
RUN_FLOW_TASK = "flowcloud.run_flow"
SUMMARIZE_TASK = "flowcloud.summarize"
# Document runs (CLI or Beat schedule), and the one task that advances every open provider Batch API run:
# Beat sends it every batch_api_poll_seconds, `flowcloud summarize --mode batch_api` while it waits.
SUMMARIZE_RUN_TASK = "flowcloud.summarize_run"
POLL_BATCHES_TASK = "flowcloud.poll_batches"
# `flowcloud summarize --mode batch_api` hands its documents to a worker, which holds the provider key.
START_BATCH_RUN_TASK = "flowcloud.start_batch_run"
DEFAULT_QUEUE = "flowcloud"
# Whole flows are CPU-heavy (graph building, component code): their own queue and pool.
FLOWS_QUEUE = "flowcloud.flows"
# Beat's alert checks (flowcloud.tasks.alerts), on a queue of their own that every worker also consumes,
# so a check never waits behind the backlog it is there to report.
CHECK_ALERTS_TASK = "flowcloud.check_alerts"
# The model check asks every provider over HTTP: a task of its own, sent far less often.
CHECK_MODELS_TASK = "flowcloud.check_models"
CHECKS_QUEUE = "flowcloud.checks"


def celery_settings(config: Config) -> dict:
    url = config.redis_url_or_embedded()
    redis_conn.protect_password(url)
    return {
        # A Sentinel group in kombu's and the result backend's spelling, its master_name in their options.
        "broker_url": redis_sentinel.celery_url(config.broker_url_or_redis()),
        "result_backend": redis_sentinel.celery_url(url),
        **tls_settings(url),
        "broker_connection_retry_on_startup": True,
        # A worker that dies mid-job must give the job back: ack after the work,
        # requeue on a lost worker, and take one message per free slot.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Redis: the visibility timeout and flowcloud's transport; RabbitMQ: quorum queues, delayed delivery.
        **broker.celery_settings(config, (DEFAULT_QUEUE, FLOWS_QUEUE, CHECKS_QUEUE)),
        "result_backend_transport_options": {"visibility_timeout": config.worker.visibility_timeout,
                                             **redis_sentinel.transport_options(url)},
        "result_expires": config.worker.result_ttl,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Events feed Flower: sent, started, retried, succeeded, failed.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {RUN_FLOW_TASK: {"queue": FLOWS_QUEUE}, CHECK_ALERTS_TASK: {"queue": CHECKS_QUEUE},
                        CHECK_MODELS_TASK: {"queue": CHECKS_QUEUE}},
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
    }


def tls_settings(url: str) -> dict:
    """A ``rediss://`` URL's TLS options as Celery settings too. kombu alone would verify no certificate
    when the URL names no ``ssl_cert_reqs``, the result backend would refuse to start, and Flower reads
    its queue lengths with these settings only, never the URL's."""
    options = redis_conn.tls_options(url)
    return {"broker_use_ssl": options, "redis_backend_use_ssl": options} if options else {}


# Beat's keys (flowcloud.beat.scheduler, on RedBeat): one hash per entry at BEAT_KEY_PREFIX + its name,
# and, past the double colon so that no entry's name can meet them, the schedule's sorted set and the lease.
BEAT_KEY_PREFIX = "flowcloud:beat:"
BEAT_LOCK_KEY = BEAT_KEY_PREFIX + ":lock"


def beat_settings(config: Config) -> dict:
    """What Beat adds to ``celery_settings``: RedBeat's scheduler on flowcloud's Redis, with the lease of ``beat``."""
    url = config.redis_url_or_embedded()
    return {
        "beat_scheduler": "flowcloud.beat.scheduler:LeasedScheduler",
        "beat_max_loop_interval": config.beat.loop_seconds,
        **redbeat_connection(url),
        "redbeat_key_prefix": BEAT_KEY_PREFIX,
        "redbeat_lock_key": BEAT_LOCK_KEY,
        "redbeat_lock_timeout": config.beat.lock_seconds,
    }


def redbeat_connection(url: str) -> dict:
    """RedBeat's URL and client options for ``url``. They are given, so RedBeat does not borrow
    broker_transport_options (visibility_timeout is no client option)."""
    if redis_sentinel.is_sentinel(url):
        # The scheduler gives RedBeat a client of redis_conn.connect for the group, which rides a failover
        # out as the workers' clients do; RedBeat only shows its URL, here with no password in it.
        return {"flowcloud_redis_url": url, "redbeat_redis_options": {},
                "redbeat_redis_url": redis_sentinel.parse(url).kombu_url(login=False)}
    from redis.backoff import EqualJitterBackoff  # Beat alone pays for redis-py here
    from redis.retry import Retry

    # A Redis restart is ridden out as the workers ride it out, standby included, instead of ending Beat.
    return {"redbeat_redis_url": client_url(url),
            "redbeat_redis_options": {"retry": Retry(EqualJitterBackoff(cap=1.0, base=0.05), RIDE_OUT_TRIES)}}


def create_app(config: Config | None = None, **settings: Any) -> Celery:
    """An app with flowcloud's Celery settings for ``config``; ``settings`` adds Celery settings of
    this app's own, e.g. Beat's ``beat_schedule`` and ``beat_settings``."""
    app = broker.App("flowcloud")
    if config is None:
        # Read when the app is first used, not when this module is imported: a process that sets its
        # configuration after importing (a test session, a command parsing its options) is not sent
        # to whatever the environment said at import.
        app.add_defaults(lambda: {**celery_settings(get_config()), **settings})
    else:
        app.conf.update({**celery_settings(config), **settings})
    return app


app = create_app()
