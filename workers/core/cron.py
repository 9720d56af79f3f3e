"""Cron lines as Celery reads them: parsed with errors that name the field, and how often one fires.

Beat builds its schedule with ``cron_schedule``; a scheduled run's ``mode: auto``
asks ``shortest_interval`` whether the schedule leaves a provider's Batch API
its completion window. Both read the line with Celery's own ``crontab``, in
Celery's default time zone (UTC), so the interval is the one Beat keeps.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from celery.schedules import ParseException, crontab
from celery.utils.time import ffwd

from flowcloud.workers.core.errors import ConfigError

# Cron's order of the five fields, named as Celery's crontab names them.
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
CRON_HINT = "fields are minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6 (Sunday 0)"
# A year and a day holds every pattern of months, days of the month and weekdays a cron line can make.
INTERVAL_HORIZON = timedelta(days=366)


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


def next_firing(schedule: crontab, after: datetime) -> datetime:
    """The schedule's first firing after ``after`` (an aware datetime), as Beat would compute it."""
    last, delta, _ = schedule.remaining_delta(after, ffwd=ffwd)
    return last + delta


def shortest_interval(schedule: crontab, start: datetime, enough: timedelta) -> timedelta:
    """The shortest time between two firings of ``schedule`` in the year after ``start``.

    The walk stops at the first interval shorter than ``enough``, which it
    returns: the caller only asks whether every interval is at least that long.
    A schedule that fires once or never in that year returns the horizon.
    """
    shortest = INTERVAL_HORIZON
    firing = next_firing(schedule, start)
    while firing - start < INTERVAL_HORIZON:
        following = next_firing(schedule, firing)
        shortest = min(shortest, following - firing)
        if shortest < enough:
            break
        firing = following
    return shortest
