"""``beat_schedule`` from the configuration: one entry per summarization schedule, plus the Batch API poll.

Each ``schedules[]`` entry becomes a crontab entry that sends
``flowcloud.summarize_run`` with the schedule's name; the task reads the rest of
the schedule from the configuration on the worker, so a message never carries
paths or settings that could go stale. When any schedule uses ``batch_api``,
``flowcloud.poll_batches`` is sent every ``batch_api_poll_seconds``. With an
``alerts:`` section, ``flowcloud.check_alerts`` is sent every ``alerts.check_seconds``
and ``flowcloud.check_models`` every ``alerts.models_check_seconds`` (hourly unless set; null: never).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery.schedules import ParseException, crontab

from flowcloud.workers.core.celery_app import (
    CHECK_ALERTS_TASK,
    CHECK_MODELS_TASK,
    POLL_BATCHES_TASK,
    SUMMARIZE_RUN_TASK,
)
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.errors import ConfigError

RUN_ENTRY_PREFIX = "summarize:"
POLL_ENTRY = "poll-batches"
CHECK_ENTRY = "check-alerts"
MODELS_ENTRY = "check-models"
# Cron's order of the five fields, named as Celery's crontab names them.
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
CRON_HINT = "fields are minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6 (Sunday 0)"


def cron_schedule(cron: str, field: str) -> crontab:
    """A five-field cron line (minute hour day-of-month month day-of-week) as a Celery crontab.

    Raises ``ConfigError`` naming ``field`` when Celery cannot read it.
    """
    parts = cron.split()
    if len(parts) != 5:
        raise ConfigError(field, f"{cron!r} is not a cron line; give five fields, e.g. '0 2 * * *' for 02:00 daily")
    fields = dict(zip(CRON_FIELDS, parts))
    for name, value in fields.items():  # one at a time, so the error can say which field is wrong
        _crontab(cron, field, f"{name.replace('_', ' ')} {value!r}: ", **{name: value})
    return _crontab(cron, field, "", **fields)


def _crontab(cron: str, field: str, where: str, **fields: str) -> crontab:
    try:
        return crontab(**fields)
    except (ValueError, ParseException, TypeError) as exc:
        raise ConfigError(field, f"{cron!r} is not a valid cron line: {where}{exc}", CRON_HINT) from exc


def beat_schedule(config: Config) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``config``; raises ``ConfigError`` for a bad cron line."""
    entries: dict[str, dict[str, Any]] = {}
    for index, schedule in enumerate(config.schedules):
        entries[RUN_ENTRY_PREFIX + schedule.name] = {
            "task": SUMMARIZE_RUN_TASK,
            "schedule": cron_schedule(schedule.cron, f"schedules.{index}.cron"),
            "args": [schedule.name],
        }
    if any(schedule.mode == "batch_api" for schedule in config.schedules):
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


def schedule_file(config: Config) -> str:
    """Where Beat remembers when each entry last ran (a shelve database under ``var_dir``)."""
    return str(config.var_dir / "beat-schedule")
