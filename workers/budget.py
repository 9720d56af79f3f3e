"""Budgets that never overshoot: each job reserves its worst-case cost before its provider call.

Checking spend and adding cost later lets N concurrent jobs all pass the same
check and overshoot together. Here a job first *reserves* its worst case
(estimated input tokens plus its max_tokens, at the model's prices) against
every budget that covers it (global, its flow, its provider), in one Lua
script: all or nothing, refused when any budget's used + reserved + this job
would pass its limit. After the call the job *settles*: its reservation is
replaced by the real cost. A call that finally fails *releases* it. Spend can
then pass a limit only by what the jobs in flight under-estimated, never by
their number.

Redis layout, amounts in integer nano-dollars (exact sums; see ``flowcloud.workers.core.money``):

- ``flowcloud:budget:<name>:<window>``: hash ``used``, ``reserved``; the window
  is the UTC day (``2026-11-25``) or month (``2026-11``); it expires a while
  after its window ends.
- ``flowcloud:budget:job:<job id>``: the job's reservation: ``state``
  (reserved, settled, released), ``model``, ``amount`` and the budget keys it
  holds. A redelivered job or a retry finds it and reserves nothing more; a
  second settle or release finds it no longer reserved and does nothing.

A job no budget covers never reaches Redis here. This module decides nothing
about the call itself: the pipeline's budget stage asks it to reserve, settle or release.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flowcloud.workers import metrics
from flowcloud.workers.core.config import BudgetConfig, Config
from flowcloud.workers.core.errors import BudgetExceeded
from flowcloud.workers.core.money import from_nano, to_nano
from flowcloud.workers.core.redis_conn import queue_script

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "flowcloud:budget:"
JOB_PREFIX = "flowcloud:budget:job:"
# A window's counters outlive it, so a job reserved at 23:59 still settles into the day it
# reserved in, and yesterday's spend stays readable for a day.
WINDOW_GRACE = timedelta(days=2)
PERIOD_LABEL = {"daily": "day", "monthly": "month"}

# KEYS: the job's reservation, then one window hash per budget.
# ARGV: reservation ttl, amount (nano-USD), model, then per budget: its limit (nano-USD), expire-at.
# Returns {1, model} when held (a reservation found is returned as it is: a redelivered job keeps
# the model it reserved for), else {0, index of the refusing budget (1-based), used, reserved}.
RESERVE = """
if redis.call('HGET', KEYS[1], 'state') == 'reserved' then
  return {1, redis.call('HGET', KEYS[1], 'model')}
end
local amount = tonumber(ARGV[2])
for i = 2, #KEYS do
  local used = tonumber(redis.call('HGET', KEYS[i], 'used') or '0')
  local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
  if used + reserved + amount > tonumber(ARGV[2 * i]) then
    return {0, i - 1, used, reserved}
  end
end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'reserved', amount)
  redis.call('EXPIREAT', KEYS[i], ARGV[2 * i + 1])
end
redis.call('HSET', KEYS[1], 'state', 'reserved', 'model', ARGV[3], 'amount', amount,
           'keys', table.concat(KEYS, ' ', 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {1, ARGV[3]}
"""

# KEYS: the job's reservation. ARGV: real cost (nano-USD), the state to leave ('settled' or 'released').
# The budget keys come from the reservation itself, so a job settles into the windows it reserved in
# even after midnight (one Redis server, not a cluster: keys read inside a script are fine there).
# Returns {} when there was nothing reserved, else the budget keys with their used amounts after it.
SETTLE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'reserved' then
  return {}
end
local amount = tonumber(redis.call('HGET', KEYS[1], 'amount'))
local cost = tonumber(ARGV[1])
local out = {}
for key in string.gmatch(redis.call('HGET', KEYS[1], 'keys'), '%S+') do
  -- A window that expired is not recreated without its expiry.
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'reserved', -amount)
    if cost > 0 then redis.call('HINCRBY', key, 'used', cost) end
    table.insert(out, key)
    table.insert(out, redis.call('HGET', key, 'used'))
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
return out
"""


@dataclass(frozen=True)
class BudgetUsage:
    """One budget in its current window, as ``usage()`` reports it; amounts in USD."""

    name: str
    period: str
    scope: str
    match: str | None
    limit_usd: float
    used_usd: float
    reserved_usd: float
    ratio: float  # used over limit; reservations not counted: they are not spent yet


@dataclass(frozen=True)
class Hold:
    """A job's reservation. ``model`` is the one to call (a degraded job's cheaper one);
    ``max_tokens`` the output bound its reservation assumed. Without a ledger, nothing is held."""

    job_id: str
    model: str
    max_tokens: int | None = None
    ledger: Ledger | None = None

    @property
    def active(self) -> bool:
        return self.ledger is not None

    def settle(self, cost_usd: float) -> None:
        """Replace the reservation by the real cost; a second settle does nothing."""
        if self.ledger is not None:
            self.ledger.finish(self.job_id, cost_usd, "settled")

    def release(self) -> None:
        """Give the reservation back (the call failed for good); after a settle it does nothing."""
        if self.ledger is not None:
            self.ledger.finish(self.job_id, 0.0, "released")


def window(period: str, now: datetime) -> tuple[str, datetime]:
    """The UTC window ``now`` falls in for ``period``: its label and when its counters expire."""
    now = now.astimezone(timezone.utc)
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start + timedelta(days=1) + WINDOW_GRACE
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.strftime("%Y-%m"), end + WINDOW_GRACE


def window_key(budget: BudgetConfig, now: datetime) -> str:
    return f"{KEY_PREFIX}{budget.name}:{window(budget.period, now)[0]}"


class Ledger:
    """Every configured budget, kept in Redis: reserve before a call, settle or release after."""

    def __init__(self, client: redis.Redis, config: Config) -> None:
        self.client = client
        self.config = config
        self.budgets = {budget.name: budget for budget in config.budgets}
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)

    def covering(self, flow: str | None, provider: str) -> list[BudgetConfig]:
        """The budgets a job of ``flow`` on ``provider`` counts against."""
        return [b for b in self.budgets.values()
                if b.scope == "global" or (b.scope == "flow" and b.match == flow)
                or (b.scope == "provider" and b.match == provider)]

    def reserve(self, job_id: str, flow: str | None, model: str, prompt_tokens: int,
                output_tokens: int | None, may_degrade: bool = True, provider: str | None = None) -> Hold:
        """Hold the job's worst-case cost on every budget covering it; raises ``BudgetExceeded``.

        When a refusing budget degrades (and the job may: chat jobs only), the job is tried once
        more on its ``degrade_model``. ``output_tokens`` None (a job without max_tokens) is
        reserved as ``budget_output_tokens``, which the caller must then send as max_tokens.
        """
        output = self.config.budget_output_tokens if output_tokens is None else output_tokens
        outcome = self._try(job_id, flow, model, prompt_tokens, output, provider)
        if isinstance(outcome, Hold):
            return outcome
        budget = self.budgets[outcome.budget]
        if may_degrade and budget.on_exceed == "degrade" and budget.degrade_model != model:
            outcome = self._try(job_id, flow, budget.degrade_model, prompt_tokens, output)
            if isinstance(outcome, Hold):
                log.info("job %s: budget %r is full; running on %s instead of %s",
                         job_id, budget.name, budget.degrade_model, model)
                return outcome
        raise outcome

    def _try(self, job_id: str, flow: str | None, model: str, prompt_tokens: int,
             output_tokens: int, at: str | None = None) -> Hold | BudgetExceeded:
        # Priced at the provider that serves the job (a group's deployment), else the model's first.
        provider, price = self.config.serving(model) if at is None else (
            self.config.provider(at), self.config.provider(at).price(model))
        budgets = self.covering(flow, provider.name)
        if not budgets:
            return Hold(job_id, model)
        amount = to_nano(price.cost(prompt_tokens, output_tokens))
        now = datetime.now(timezone.utc)
        args: list[object] = [self.config.worker.result_ttl, amount, model]
        for budget in budgets:
            args += [to_nano(budget.limit_usd), int(window(budget.period, now)[1].timestamp())]
        keys = [JOB_PREFIX + job_id] + [window_key(b, now) for b in budgets]
        answer = self._reserve(keys=keys, args=args)
        if int(answer[0]) == 1:
            return Hold(job_id, _text(answer[1]), output_tokens, self)
        refusing = budgets[int(answer[1]) - 1]
        return BudgetExceeded(refusing.name, limit_usd=refusing.limit_usd, used_usd=from_nano(answer[2]),
                              reserved_usd=from_nano(answer[3]), needed_usd=from_nano(amount))

    def finish(self, job_id: str, cost_usd: float, state: str) -> None:
        """Settle (``cost_usd`` spent) or release (nothing spent) the job's reservation."""
        self._report(self._settle(keys=[JOB_PREFIX + job_id], args=[to_nano(cost_usd), state]))

    def finish_in(self, pipe: redis.client.Pipeline, job_id: str, cost_usd: float,
                  state: str) -> Callable[[Iterator[Any]], None]:
        """``finish`` queued on ``pipe``; returns the reader that takes its reply."""
        settled = queue_script(pipe, self._settle, keys=[JOB_PREFIX + job_id], args=[to_nano(cost_usd), state])
        return lambda replies: self._report(settled(next(replies)))

    def _report(self, answer: list[Any]) -> None:
        """Feed the used amounts a settle or release returned to the metrics."""
        for key, used in zip(answer[::2], answer[1::2]):
            budget = self.budgets.get(_text(key)[len(KEY_PREFIX):].rsplit(":", 1)[0])
            if budget is not None:  # None: a budget removed from the configuration since
                report(budget, from_nano(used))

    def usage(self) -> list[BudgetUsage]:
        """Every configured budget in its current window, in configuration order (one round trip)."""
        now = datetime.now(timezone.utc)
        pipe = self.client.pipeline(transaction=False)
        for budget in self.budgets.values():
            pipe.hmget(window_key(budget, now), "used", "reserved")
        found = []
        for budget, (used, reserved) in zip(self.budgets.values(), pipe.execute()):
            used_usd = from_nano(used)
            ratio = int(used or 0) / to_nano(budget.limit_usd)  # in integers: 0.04 of 0.05 is 0.8
            found.append(BudgetUsage(budget.name, budget.period, budget.scope, budget.match, budget.limit_usd,
                                     used_usd, from_nano(reserved), ratio))
            report(budget, used_usd)
        return found


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def report(budget: BudgetConfig, used_usd: float) -> None:
    """Feed the budget's used ratio to the metrics (a no-op outside a worker)."""
    metrics.set_budget_used(PERIOD_LABEL[budget.period], budget.scope, budget.match, used_usd / budget.limit_usd)
