"""The stages a job runs through around its provider call, in order (``default_stages``).

Adding a stage (a circuit breaker, a rate limit, masking) is one class with the
hooks of ``flowcloud.workers.pipeline.stage.Stage`` and one line in the list;
see docs/architecture.md.
"""

from __future__ import annotations

from flowcloud.workers.budget import Ledger
from flowcloud.workers.core.cache import AnswerCache
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.records import JobStore
from flowcloud.workers.pipeline.stage import Stage
from flowcloud.workers.pipeline.stages.budget import BudgetStage
from flowcloud.workers.pipeline.stages.flight import FlightStage
from flowcloud.workers.pipeline.stages.lane import LaneStage
from flowcloud.workers.pipeline.stages.mask import MaskStage
from flowcloud.workers.pipeline.stages.rate_limit import RateLimitStage
from flowcloud.workers.pipeline.stages.record import RecordStage
from flowcloud.workers.pipeline.stages.route import RouteStage, routed
from flowcloud.workers.rate_limits import Limiter
from flowcloud.workers.routing.arms import Arms
from flowcloud.workers.routing.health import Fleet
from flowcloud.workers.routing.router import Router


def default_stages(config: Config, store: JobStore, cache: AnswerCache | None, budgets: Ledger | None,
                   router: Router, limiter: Limiter | None = None) -> list[Stage]:
    """The stages of a worker's pipeline; a part the configuration turns off has no stage, so its
    jobs pay nothing for it."""
    stages: list[Stage] = []
    # Outermost: after the call it shares an answer only once the record says the job succeeded,
    # so an identical job woken by the landing never finishes from the cache before this one.
    if cache is not None:
        stages.append(FlightStage(cache))
    stages.append(RecordStage(store, config))
    # Before the budget: a job is priced on the deployment that serves it.
    if any(routed(group) for group in config.model_groups):
        stages.append(RouteStage(config, router, Fleet(store.client), Arms(store.client)))
    # After the route, whose deployment it limits; before the budget, so a job waiting for its
    # slot holds no reservation meanwhile.
    if limiter is not None:  # some deployment has an rpm or tpm
        stages.append(RateLimitStage(limiter, config))
    if budgets is not None:
        stages.append(BudgetStage(budgets, router))
    # Once the job's provider is final (the route and a budget's cheaper model choose it), and before its
    # lane, which carries the prompt to the call. The flight stage keys the cache on the prompt as sent:
    # an answer restored for one caller is never handed to another whose prompt differed in a masked value.
    if config.mask is not None:
        stages.append(MaskStage(config.mask))
    stages.append(LaneStage(config))  # last before the call: it chooses how the call goes
    return stages


__all__ = ["BudgetStage", "FlightStage", "LaneStage", "MaskStage", "RateLimitStage", "RecordStage", "RouteStage", "default_stages"]
