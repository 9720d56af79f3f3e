"""The tally: spend and savings per day and job outcomes per minute, counted where records finish.

The record store's finishing write (``flowcloud.workers.core.records``) bumps three Redis hashes in
the same Lua script, so the counters cost no extra round trip and can never
disagree with the records:

- ``flowcloud:costs:<YYYY-MM-DD>`` (UTC day), field ``<flow>|<provider>|<model>``:
  billed nano-USD; kept ``COSTS_TTL`` seconds. Read by ``flowcloud costs``.
- ``flowcloud:outcomes:<minute>`` (``int(unix time // 60)``), field
  ``<provider>|<status>``: finished jobs; kept ``OUTCOMES_TTL`` seconds. Read by
  Beat's error-rate check.
- ``flowcloud:savings:<YYYY-MM-DD>``, field ``<flow>|<provider>|<model>|<lever>``:
  nano-USD a ``Lever`` saved against the naive call (the job's model, one direct
  call at list price); kept as long as the costs. Read by ``flowcloud costs``.
  The finishing write tallies a record's ``savings_usd`` (lever -> USD), billed or
  not: a summary saves by its plan although its cost is its chunk jobs'.

Batch API runs keep no job records: a collected round is billed with ``bill_in``,
queued in the transaction that stores the run's new state.

A missing flow, provider or model is written as ``-``. This module owns those
formats: the writer and every reader build and parse keys only through it. It
imports nothing worker-side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from flowcloud.workers.core.money import from_nano

if TYPE_CHECKING:
    import redis

COSTS_PREFIX = "flowcloud:costs:"
SAVINGS_PREFIX = "flowcloud:savings:"
OUTCOMES_PREFIX = "flowcloud:outcomes:"
# Over a year, so a month or a year can be compared with the one before it.
COSTS_TTL = 400 * 24 * 3600
# The error-rate check looks back minutes, not hours.
OUTCOMES_TTL = 2 * 3600
NONE = "-"
SEPARATOR = "|"


def utc_day(at: float | None = None) -> str:
    """The UTC date of unix time ``at`` (now when None) as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(time.time() if at is None else at, timezone.utc).strftime("%Y-%m-%d")


def minute_of(at: float | None = None) -> int:
    """The minute number of unix time ``at`` (now when None): ``int(at // 60)``."""
    return int((time.time() if at is None else at) // 60)


def costs_key(day: str) -> str:
    return COSTS_PREFIX + day


def savings_key(day: str) -> str:
    return SAVINGS_PREFIX + day


def outcomes_key(minute: int) -> str:
    return OUTCOMES_PREFIX + str(minute)


def cost_field(flow: str | None, provider: str | None, model: str | None) -> str:
    return SEPARATOR.join(part or NONE for part in (flow, provider, model))


def outcome_field(provider: str | None, status: str) -> str:
    return f"{provider or NONE}{SEPARATOR}{status}"


@dataclass(frozen=True)
class CostEntry:
    """Billed spend of one flow, provider and model on one UTC day."""

    day: str
    flow: str
    provider: str
    model: str
    nano_usd: int

    @property
    def usd(self) -> float:
        return from_nano(self.nano_usd)


class Lever(str, Enum):
    """What made a job cost less than its naive call; a record's ``savings_usd`` is keyed by these."""

    CACHE = "cache"  # answered from the cache: an earlier identical job's answer
    COALESCING = "coalescing"  # answered by an identical job that was in flight while it waited
    LOCAL_TIER = "local_tier"  # served by a hybrid group's local tier, priced at its cheapest cloud tier
    BATCH_API = "batch_api"  # the provider's Batch API: list price minus batch price
    SUMMARY_PLAN = "summary_plan"  # the chunked plan's expected cost minus the plan used
    CACHED_INPUT = "cached_input"  # prompt tokens from the provider's prompt cache: list minus cached price


@dataclass(frozen=True)
class SavingEntry:
    """What one lever saved for one flow, provider and model on one UTC day."""

    day: str
    flow: str
    provider: str
    model: str
    lever: str
    nano_usd: int

    @property
    def usd(self) -> float:
        return from_nano(self.nano_usd)


def parse_cost_field(day: str, field: str, nano_usd: int) -> CostEntry:
    # Split from the right: provider and model names are validated, a flow name may hold "|".
    flow, provider, model = field.rsplit(SEPARATOR, 2)
    return CostEntry(day, flow, provider, model, nano_usd)


def days_between(first: date, last: date) -> list[str]:
    """Every UTC day from ``first`` to ``last`` inclusive, as ``YYYY-MM-DD``."""
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def read_costs(client: redis.Redis, days: Iterable[str]) -> list[CostEntry]:
    """The tally's cost entries for ``days``, in one round trip."""
    return [parse_cost_field(day, field, value) for day, field, value in _read_days(client, costs_key, days)]


def _read_days(client: redis.Redis, key_of: Callable[[str], str], days: Iterable[str],
               ) -> Iterator[tuple[str, str, int]]:
    """(day, field, value) of the hash ``key_of(day)`` for each of ``days``, read in one round trip."""
    days = list(days)
    pipe = client.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(key_of(day))
    for day, fields in zip(days, pipe.execute()):
        for field, value in fields.items():
            yield day, field.decode() if isinstance(field, bytes) else field, int(value)


def bill_in(pipe: redis.client.Pipeline, flow: str | None, provider: str | None, model: str | None,
            nano_usd: int, savings: dict[Lever, int], at: float | None = None) -> None:
    """Queue on ``pipe`` the tally of spend that finishes outside a job record (a Batch API round), so it
    lands in the same transaction as the state that says it finished."""
    day, field = utc_day(at), cost_field(flow, provider, model)
    if nano_usd > 0:
        pipe.hincrby(costs_key(day), field, nano_usd)
        pipe.expire(costs_key(day), COSTS_TTL)
    saved = {lever: nano for lever, nano in savings.items() if nano > 0}
    for lever, nano in saved.items():
        pipe.hincrby(savings_key(day), f"{field}{SEPARATOR}{Lever(lever).value}", nano)
    if saved:
        pipe.expire(savings_key(day), COSTS_TTL)


def read_savings(client: redis.Redis, days: Iterable[str]) -> list[SavingEntry]:
    """The tally's savings entries for ``days``, in one round trip."""
    entries = []
    for day, field, value in _read_days(client, savings_key, days):
        where, _, lever = field.rpartition(SEPARATOR)
        cost = parse_cost_field(day, where, value)
        entries.append(SavingEntry(day, cost.flow, cost.provider, cost.model, lever, cost.nano_usd))
    return entries


def read_outcomes(client: redis.Redis, minutes: Iterable[int]) -> dict[tuple[str, str], int]:
    """Finished jobs by (provider, status) summed over ``minutes``, in one round trip."""
    minutes = list(minutes)
    pipe = client.pipeline(transaction=False)
    for minute in minutes:
        pipe.hgetall(outcomes_key(minute))
    totals: dict[tuple[str, str], int] = {}
    for fields in pipe.execute():
        for field, value in fields.items():
            field = field.decode() if isinstance(field, bytes) else field
            provider, _, status = field.rpartition(SEPARATOR)
            totals[(provider, status)] = totals.get((provider, status), 0) + int(value)
    return totals
