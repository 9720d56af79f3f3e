"""``beat_schedule`` from the configuration: one entry per summarization schedule, plus the Batch API poll.

Each ``schedules[]`` entry becomes a crontab entry that sends
``flowcloud.summarize_run`` with the schedule's name; the task reads the rest of
the schedule from the configuration on the worker, so a message never carries
paths or settings that could go stale. When any schedule may go through the
Batch API (``mode: batch_api``, or ``auto``, which decides at each run),
``flowcloud.poll_batches`` is sent every ``batch_api_poll_seconds``. Cron lines
are read by ``flowcloud.workers.core.cron``. With an
``alerts:`` section, ``flowcloud.check_alerts`` is sent every ``alerts.check_seconds``
and ``flowcloud.check_models`` every ``alerts.models_check_seconds`` (hourly unless set; null: never).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowcloud.workers.core.celery_app import (
    CHECK_ALERTS_TASK,
    CHECK_MODELS_TASK,
    POLL_BATCHES_TASK,
    SUMMARIZE_RUN_TASK,
)
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.cron import cron_schedule

RUN_ENTRY_PREFIX = "summarize:"
POLL_ENTRY = "poll-batches"
CHECK_ENTRY = "check-alerts"
MODELS_ENTRY = "check-models"


def beat_schedule(config: Config) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``config``; raises ``ConfigError`` for a bad cron line."""
    entries: dict[str, dict[str, Any]] = {}
    for index, schedule in enumerate(config.schedules):
        entries[RUN_ENTRY_PREFIX + schedule.name] = {
            "task": SUMMARIZE_RUN_TASK,
            "schedule": cron_schedule(schedule.cron, f"schedules.{index}.cron"),
            "args": [schedule.name],
        }
    if any(schedule.mode != "tasks" for schedule in config.schedules):
        entries[POLL_ENTRY] = {
            "task": POLL_BATCHES_TASK,
            "schedule": timedelta(seconds=config.batch_api_poll_seconds),
            # A poll that waited longer than the next one is worth nothing.
            "options": {"expires": config.batch_api_poll_seconds},
        }
    if config.alerts is not None:
        entries[CHECK_ENTRY] = {
            "task": CHECK_ALERTS_TASK,
            "schedule": timedelta(seconds=config.alerts.check_seconds),
            # Routed to the checks queue by the app's task_routes; a stale check is dropped, not run late.
            "options": {"expires": config.alerts.check_seconds},
        }
    if config.alerts is not None and config.alerts.models_check_seconds is not None:
        entries[MODELS_ENTRY] = {
            "task": CHECK_MODELS_TASK,
            "schedule": timedelta(seconds=config.alerts.models_check_seconds),
            "options": {"expires": config.alerts.models_check_seconds},
        }
    return entries

