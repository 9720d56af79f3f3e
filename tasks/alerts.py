"""Beat's alert checks as tasks, on a queue of their own that every worker also consumes.

``flowcloud.check_alerts`` and ``flowcloud.check_models`` go to ``flowcloud.checks``, not behind the job
queues: a check must not wait behind the very backlog it is meant to report.
The checks themselves are ``flowcloud.workers.alerts.checks``.
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_after_setup

from flowcloud.workers.alerts.checks import MODEL_CHECKS, check_now
from flowcloud.workers.core.celery_app import CHECK_ALERTS_TASK, CHECK_MODELS_TASK, CHECKS_QUEUE, app
from flowcloud.workers.core.config import get_config


@app.task(name=CHECK_ALERTS_TASK, ignore_result=True)
def check_alerts() -> int:
    """Beat's periodic check; returns how many notices it sent. Does nothing without an ``alerts:`` section."""
    return len(check_now(get_config()))


@app.task(name=CHECK_MODELS_TASK, ignore_result=True)
def check_models() -> int:
    """Beat's model check: each provider's model list against the configured models; returns the notices sent."""
    return len(check_now(get_config(), MODEL_CHECKS))


@celeryd_after_setup.connect
def consume_checks(sender: str, instance: Any, **_: Any) -> None:
    """Every worker also takes the checks queue, whatever ``--queues`` it was started with."""
    queues = instance.app.amqp.queues
    # The app's own declaration of the queue (on RabbitMQ a quorum queue), not a plain one of that name.
    queues.select_add(queues[CHECKS_QUEUE])
