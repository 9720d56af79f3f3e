"""Beat's guard over gray releases: an arm that does worse than its baseline is turned off.

For each weighted group with a ``guard``, the arms' figures over the last
``window_minutes`` are compared (``flowcloud.workers.routing.arms``). Once both
arms have ``min_calls``, an arm whose share of failed calls exceeds the
baseline's by more than ``max_error_rate_increase``, or whose p99 latency passes
``max_p99_ratio`` times the baseline's, gets weight 0 in Redis, so every worker
stops sending it jobs at once, and its alert fires. The alert stays firing while
the arm is off: an operator looks, then turns it back on with
``flowcloud ab restore GROUP ARM``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcloud.workers.alerts.state import Condition
from flowcloud.workers.core import tally
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.config_routing import ArmGuard
from flowcloud.workers.routing.arms import Arms, ArmStats

if TYPE_CHECKING:
    import redis


def ab_guard(client: redis.Redis, config: Config, now: float) -> list[Condition]:
    arms = Arms(client)
    conditions = []
    for group in config.model_groups:
        guard = group.guard
        if guard is None:
            continue
        last = tally.minute_of(now)
        stats = arms.read(group.name, [guard.arm, guard.baseline], range(last - guard.window_minutes + 1, last + 1))
        worse = verdict(guard, stats[guard.arm], stats[guard.baseline])
        if worse:
            arms.set_weight(group.name, guard.arm, 0.0)
        off = arms.weights(group.name).get(guard.arm) == 0.0
        summary = (f"group {group.name}: arm {guard.arm} is off ({worse or 'turned off earlier'}); "
                   f"flowcloud ab restore {group.name} {guard.arm} turns it back on") if off else (
                   f"group {group.name}: arm {guard.arm} is within its guard against {guard.baseline}")
        details = {f"{name}_{figure}": value for name, arm in ((guard.arm, stats[guard.arm]),
                                                               (guard.baseline, stats[guard.baseline]))
                   for figure, value in (("calls", arm.calls), ("error_rate", round(arm.error_rate, 4)),
                                         ("p99_ms", arm.percentile_ms(0.99)))}
        conditions.append(Condition(f"ab_guard:{group.name}:{guard.arm}", off, summary, details))
    return conditions


def verdict(guard: ArmGuard, arm: ArmStats, baseline: ArmStats) -> str | None:
    """Why ``arm`` does worse than ``baseline`` by the guard's margins, or None."""
    if arm.calls < guard.min_calls or baseline.calls < guard.min_calls:
        return None
    if arm.error_rate > baseline.error_rate + guard.max_error_rate_increase:
        return (f"{arm.error_rate:.1%} of its calls failed against {baseline.error_rate:.1%} "
                f"(margin {guard.max_error_rate_increase:.1%})")
    arm_p99, base_p99 = arm.percentile_ms(0.99), baseline.percentile_ms(0.99)
    if guard.max_p99_ratio and arm_p99 and base_p99 and arm_p99 > guard.max_p99_ratio * base_p99:
        return f"p99 {arm_p99:g} ms against {base_p99:g} ms (at most {guard.max_p99_ratio:g}x)"
    return None
