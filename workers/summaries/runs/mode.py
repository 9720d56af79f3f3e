"""Which way a scheduled run goes in ``mode: auto``: through the provider's Batch API, or as jobs now.

The rule, *the window fits*: a run goes through the Batch API when the
provider serving its model offers one (the adapter's capability, narrowed to
the provider's ``endpoints``) and the schedule leaves the Batch API its
completion window (OpenAI's: 24 h). What the schedule leaves is its
``deadline_hours`` when it sets one, else the shortest interval between two of
its firings (``flowcloud.workers.core.cron``): a run may take until the
schedule fires again. A daily or weekly schedule thus goes through the Batch
API at its lower price; an hourly one, or one whose summaries are due within
hours, runs as jobs now. The choice and its reason go into the run's spec,
its report and the worker's log.

``decide`` is the rule itself, a pure function; ``choose`` gathers its inputs
from the schedule, the clock and this worker's providers. Nothing here starts a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from flowcloud.workers import runtime
from flowcloud.workers.core.config import Schedule
from flowcloud.workers.core.cron import cron_schedule, shortest_interval
from flowcloud.workers.providers.base import Capability


@dataclass(frozen=True)
class ModeChoice:
    """How a run goes, and why, in words for its report and the log."""

    mode: Literal["tasks", "batch_api"]
    reason: str


def choose(schedule: Schedule, field: str, now: datetime) -> ModeChoice:
    """How ``schedule``'s run that starts at ``now`` goes; ``field`` names the schedule in errors
    (``schedules.0``). Raises ``InvalidJob`` for a model nobody serves, ``ConfigError`` for a bad cron line."""
    if schedule.mode != "auto":
        return ModeChoice(schedule.mode, f"mode: {schedule.mode} in the configuration")
    config = runtime.current().config
    provider, _ = runtime.current().router.route(schedule.model or config.summarize.model)
    if not provider.supports(Capability.BATCH_API):
        return ModeChoice("tasks", f"auto: provider {provider.name!r} offers no Batch API")
    window = provider.batch_api().completion_window
    allowed, allowed_by = time_allowed(schedule, field, window, now)
    return decide(provider.name, window, allowed, allowed_by)


def decide(provider: str, window: timedelta, allowed: timedelta, allowed_by: str) -> ModeChoice:
    """The rule for a provider that offers a Batch API with ``window``, when the schedule leaves the run
    ``allowed`` (``allowed_by`` says how, in words)."""
    if allowed < window:
        return ModeChoice("tasks", f"auto: the Batch API's {duration(window)} window of provider {provider!r} "
                                   f"is longer than {allowed_by}")
    return ModeChoice("batch_api", f"auto: provider {provider!r} offers a Batch API and its {duration(window)} "
                                   f"window fits {allowed_by}")


def time_allowed(schedule: Schedule, field: str, window: timedelta, now: datetime) -> tuple[timedelta, str]:
    """How long the run may take, and how the schedule says so: its ``deadline_hours``, else the interval
    between its firings (the walk stops at the first one shorter than ``window``)."""
    if schedule.deadline_hours is not None:
        allowed = timedelta(hours=schedule.deadline_hours)
        return allowed, f"the schedule's deadline_hours ({duration(allowed)})"
    interval = shortest_interval(cron_schedule(schedule.cron, f"{field}.cron"), now, window)
    if interval < window:
        return interval, f"an interval of {duration(interval)} between the schedule's firings"
    return interval, f"the shortest interval between the schedule's firings ({duration(interval)})"


def duration(span: timedelta) -> str:
    """``30 min``, ``24 h``, ``7 days``: the unit a person would use."""
    hours = span.total_seconds() / 3600
    if hours < 1:
        return f"{round(hours * 60, 1):g} min"
    if hours < 48:
        return f"{round(hours, 1):g} h"
    return f"{round(hours / 24, 1):g} days"
