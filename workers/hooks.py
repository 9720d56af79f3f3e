"""Worker life-cycle hooks: log redaction once logging is set up, the redelivery
sweeper once the worker is ready, pooled connections closed on exit."""

from __future__ import annotations

import logging

from celery import signals

from workers import runtime
from workers.config import get_config
from workers.guard import install_log_redaction
from workers.redelivery import start_sweeper


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def redact_logs(logger: logging.Logger | None = None, **_) -> None:
    install_log_redaction(logger)


@signals.worker_ready.connect
def sweep_for_lost_jobs(sender, **_) -> None:
    start_sweeper(sender.app, get_config().worker.visibility_timeout)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def close_providers(**_) -> None:
    if runtime.router.cache_info().currsize:
        runtime.router().close()
