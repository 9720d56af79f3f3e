"""Worker life-cycle hooks: log redaction once logging is set up, the redelivery
sweeper once the worker is ready, pooled connections closed on exit."""

from __future__ import annotations

import logging

from celery import signals

from workers import runtime
from workers.celery_app import FLOWS_QUEUE
from workers.config import get_config
from workers.guard import install_log_redaction
from workers.redelivery import start_sweeper


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def redact_logs(logger: logging.Logger | None = None, **_) -> None:
    install_log_redaction(logger)


@signals.worker_init.connect
def size_connection_pools(sender, **_) -> None:
    # A prefork child runs one job at a time; gevent and threads run `concurrency` in one process.
    forked = "prefork" in getattr(sender.pool_cls, "__module__", "")
    runtime.size_for(1 if forked else sender.concurrency)


@signals.worker_init.connect
def preload_lfx_for_flow_workers(sender, **_) -> None:
    """Import lfx once in a flow worker's parent, so forked pool processes share it instead
    of each paying seconds and ~170 MB on their first flow."""
    if FLOWS_QUEUE in sender.app.amqp.queues:
        from workers import flow_runner

        flow_runner.preload()


@signals.worker_ready.connect
def sweep_for_lost_jobs(sender, **_) -> None:
    start_sweeper(sender.app, get_config().worker.visibility_timeout)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def close_providers(**_) -> None:
    if runtime.router.cache_info().currsize:
        runtime.router().close()
