"""Beat's periodic checks: error rate, budget consumption, queue backlog and the A/B guard, read straight from Redis;
and, less often, the providers' model lists.

Beat sends ``flowcloud.check_alerts`` (``flowcloud.tasks.alerts``) every
``alerts.check_seconds``; the task calls ``check_now``. The model check asks
every provider over HTTP, so it runs on its own task, ``flowcloud.check_models``,
every ``alerts.models_check_seconds`` (``check_now(config, MODEL_CHECKS)``). Each check turns what it
reads into ``Condition``s; ``flowcloud.workers.alerts.state`` decides which
become notices and ``flowcloud.workers.alerts.sinks`` delivers them. No
Prometheus server is needed. A check that fails is logged and the others still run; its alerts
keep the state they had.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from flowcloud.workers.alerts.ab_guard import ab_guard
from flowcloud.workers.alerts.state import AlertBook, Condition, degraded_condition, write_degraded_flag
from flowcloud.workers.alerts.sinks import Notice, deliver
from flowcloud.workers.core import tally
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.records import JobStatus
from flowcloud.workers.core.queues import queue_lengths
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.providers.survey import ModelReport, Standing, survey_config

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# Jobs that ran to an end; a cancelled job says nothing about the providers' health.
COUNTED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


def error_rate(client: redis.Redis, config: Config, now: float) -> list[Condition]:
    """Share of finished jobs that failed over the last ``window_minutes`` (the current minute included)."""
    rule = config.alerts.error_rate
    last = tally.minute_of(now)
    totals = tally.read_outcomes(client, range(last - rule.window_minutes + 1, last + 1))
    jobs = sum(count for (_, status), count in totals.items() if status in COUNTED)
    failed = sum(count for (_, status), count in totals.items() if status == JobStatus.FAILED)
    rate = failed / jobs if jobs else 0.0
    firing = jobs >= rule.min_jobs and rate > rule.threshold
    by_provider = {provider: count for (provider, status), count in sorted(totals.items())
                   if status == JobStatus.FAILED}
    summary = (f"{rate:.1%} of {jobs} jobs failed in the last {rule.window_minutes} min "
               f"(threshold {rule.threshold:.1%}, at least {rule.min_jobs} jobs)")
    details = {"error_rate": round(rate, 4), "failed": failed, "jobs": jobs,
               "failed_by_provider": ", ".join(f"{p}={n}" for p, n in by_provider.items()) or "none"}
    return [Condition("error_rate", firing, summary, details)]


def backlog(client: redis.Redis, config: Config, now: float) -> list[Condition]:
    """Messages waiting in the job queues against ``backlog.threshold``."""
    rule = config.alerts.backlog
    if rule.threshold is None:
        return []
    lengths = queue_lengths(config, rule.queues, client)
    waiting = sum(lengths.values())
    firing = waiting > rule.threshold
    summary = f"{waiting} messages waiting in the queues (threshold {rule.threshold})"
    return [Condition("backlog", firing, summary, {"waiting": waiting, **lengths}, degrade=firing)]


def budgets(client: redis.Redis, config: Config, now: float) -> list[Condition]:
    """One condition per budget and alert threshold: fires once the budget's used ratio reaches it."""
    rule = config.alerts.budget
    if not rule.enabled or not config.budgets:
        return []
    from flowcloud.workers.budget import Ledger

    conditions = []
    for use in Ledger(client, config).usage():
        thresholds = alert_thresholds(config, use.name)
        # Degraded mode is asked for once per budget, by its highest firing threshold.
        top = max((t for t in thresholds if use.ratio >= t), default=None)
        for threshold in thresholds:
            firing = use.ratio >= threshold
            summary = (f"budget {use.name} ({use.period}, {use.scope}{' ' + use.match if use.match else ''}) "
                       f"at {use.ratio:.0%} of ${use.limit_usd:g} (alert at {threshold:.0%})")
            details = {"used_usd": round(use.used_usd, 6), "reserved_usd": round(use.reserved_usd, 6),
                       "limit_usd": use.limit_usd, "ratio": round(use.ratio, 4)}
            conditions.append(Condition(f"budget:{use.name}@{threshold:.0%}", firing, summary, details,
                                        degrade=threshold == top and use.ratio >= rule.degrade_at))
    return conditions


def alert_thresholds(config: Config, name: str) -> list[float]:
    """The budget's own ``alert_at`` thresholds when the configuration gives them, else the alerts default."""
    entry = next((b for b in config.budgets if b.name == name), None)
    return sorted(entry.alert_at if entry and entry.alert_at else config.alerts.budget.default_alert_at)


def models(client: redis.Redis, config: Config, now: float) -> list[Condition]:
    """One condition per configured model its provider lists (missing or deprecated: firing), and one per
    provider with a model list, firing while the list cannot be had; meanwhile its models' alerts keep
    their state rather than all firing as missing."""
    conditions = []
    for entry in config.providers:
        reports = survey_config(entry, config.vault)
        if all(report.standing is Standing.UNSUPPORTED for report in reports):
            continue
        unreachable = [report for report in reports if report.standing is Standing.UNREACHABLE]
        summary = (f"provider {entry.name} could not be asked for its models: {unreachable[0].detail}" if unreachable
                   else f"provider {entry.name} lists its models again")
        conditions.append(Condition(f"model_list:{entry.name}", bool(unreachable), summary))
        conditions += [model_condition(report) for report in reports if report.standing.known]
    return conditions


def model_condition(report: ModelReport) -> Condition:
    firing = report.standing is not Standing.SERVED
    summary = (f"model {report.model} of provider {report.provider} is {report.standing.value}: {report.detail}"
               if firing else f"model {report.model} of provider {report.provider} is served")
    return Condition(f"model:{report.provider}/{report.model}", firing, summary,
                     {"provider": report.provider, "model": report.model, "standing": report.standing.value})


Check = Callable[[Any, Config, float], list[Condition]]
CHECKS: tuple[Check, ...] = (error_rate, backlog, budgets, ab_guard)
MODEL_CHECKS: tuple[Check, ...] = (models,)


def run_checks(client: redis.Redis, config: Config, now: float, checks: tuple[Check, ...] = CHECKS) -> list[Notice]:
    """Run ``checks`` once, update alert state and degraded mode, deliver the notices; returns them."""
    settings = config.alerts
    conditions: list[Condition] = []
    for check in checks:
        try:
            conditions += check(client, config, now)
        except Exception:  # noqa: BLE001 - one broken check must not stop the others
            log.exception("alert check %s failed; its alerts keep their state", check.__name__)
    book = AlertBook(client, settings.repeat_minutes * 60)
    notices = book.update(conditions, now)
    degraded = degraded_condition(book, settings)
    if degraded is not None:
        notices += book.update([degraded], now)
    # Cleared too when degraded mode is no longer configured, so a flag set before a config change goes.
    write_degraded_flag(book, settings, bool(degraded and degraded.firing),
                        degraded.details["reasons"] if degraded else "")
    deliver(settings.sinks, notices)
    return notices


def check_now(config: Config, checks: tuple[Check, ...] = CHECKS) -> list[Notice]:
    """``run_checks`` against the configured Redis, now; nothing without an ``alerts:`` section."""
    if config.alerts is None:
        return []
    return run_checks(connect(config.redis_url_or_embedded()), config, time.time(), checks)
