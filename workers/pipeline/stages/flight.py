"""The answer cache and single flight: one provider call for identical jobs.

On the job's first round trip, a job that may use the cache looks up its
answer and bids to lead its call. A cached answer finishes it at once; a job
that does not lead waits for the one that does (a countdown, holding no worker
slot and spending no attempt), then finds its answer. The leader's ``after``
stores the answer and lands the flight on its last round trip, or only lands it
when there is no answer to share, so the next identical job calls on its own.
(A leader the budget sends to a cheaper model keeps its flight until its call
ends, then only lands it: its twins wait that long, then call on their own.)
"""

from __future__ import annotations

from typing import Any, Iterator

from redis.client import Pipeline as RedisPipeline

from flowcloud.workers.core.cache import AnswerCache, cache_key
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Ending, Outcome
from flowcloud.workers.pipeline.stage import AfterReader, Stage, StartReader
from flowcloud.workers.pipeline.stages.record import answer_fields

# How often a job coalesced behind an identical one looks for its answer.
COALESCED_WAIT_SECONDS = 0.25
# A flight outlives one provider call by this much before another job may take it over.
FLIGHT_MARGIN_SECONDS = 5.0


class FlightStage(Stage):
    def __init__(self, cache: AnswerCache) -> None:
        self.cache = cache

    def start(self, job: Job, pipe: RedisPipeline) -> StartReader | None:
        if not (job.is_chat and job.spec.cache):
            return None
        key = cache_key(job.spec, job.model)
        read = self.cache.lookup_or_lead_in(pipe, key, job.id, flight_ttl=job.provider.call_seconds + FLIGHT_MARGIN_SECONDS)

        def looked_up(replies: Iterator[Any]) -> Outcome | None:
            answer, leads = read(replies)
            if leads:
                job.flight = key
                return None
            return Outcome.from_cache(answer) if answer is not None else Outcome.wait(COALESCED_WAIT_SECONDS)

        return looked_up

    def after(self, job: Job, outcome: Outcome, pipe: RedisPipeline) -> AfterReader | None:
        if job.flight is None:
            return None
        # A degraded job's answer is not the asked model's: nobody else may take it for one.
        if outcome.ending is Ending.SUCCEEDED and not job.degraded:
            return self.cache.store_and_land_in(pipe, job.flight, answer_fields(job, outcome), job.id)
        return self.cache.land_in(pipe, job.flight, job.id)
