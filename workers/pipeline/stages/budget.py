"""Budgets around the call: reserve the job's worst-case cost before it, settle the real cost after.

A refused job fails with ``budget_exceeded``; a degraded one runs on the
budget's cheaper model (``flowcloud.workers.budget`` decides both). After the
call the reservation is settled on success, kept for a retry (the next attempt
finds it and reserves nothing more) and released on every other ending, also
when this attempt never reserved: an earlier attempt's reservation does not
outlive a job cancelled while it waited for its retry.
"""

from __future__ import annotations

from redis.client import Pipeline as RedisPipeline

from flowcloud.workers.budget import Ledger
from flowcloud.workers.core.errors import BudgetExceeded
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Ending, Outcome
from flowcloud.workers.pipeline.stage import AfterReader, Stage
from flowcloud.workers.routing.router import Router

class BudgetStage(Stage):
    def __init__(self, ledger: Ledger, router: Router) -> None:
        self.ledger = ledger
        self.router = router

    def before(self, job: Job) -> Outcome | None:
        try:
            # An embedding produces no tokens, and no chat model can stand in for it.
            job.hold = self.ledger.reserve(job.id, job.flow, job.model, job.prompt_tokens(), job.output_tokens(),
                                           may_degrade=job.is_chat, provider=job.provider.name)
        except BudgetExceeded as exc:  # the record stage logs it with the job's failure
            return Outcome.failed(exc)
        if job.hold.model != job.model:
            job.reroute(*self.router.route(job.hold.model))
        if job.is_chat and job.hold.active and job.spec.max_tokens is None:  # the bound its reservation assumed
            job.spec = job.spec.model_copy(update={"max_tokens": job.hold.max_tokens})
        return None

    def after(self, job: Job, outcome: Outcome, pipe: RedisPipeline) -> AfterReader | None:
        if outcome.ending.later:
            return None  # the next attempt finds the reservation and reserves nothing more
        if outcome.ending is Ending.SUCCEEDED:
            return self.ledger.finish_in(pipe, job.id, outcome.cost_usd, "settled")
        return self.ledger.finish_in(pipe, job.id, 0.0, "released")
