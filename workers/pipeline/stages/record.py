"""The job's record and its metrics: running when it starts, and what became of it when it ends."""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator

from redis.client import Pipeline as RedisPipeline

from flowcloud.workers import metrics
from flowcloud.workers.core import savings
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.records import JobStatus, JobStore, failed, running, succeeded
from flowcloud.workers.core.tally import Lever
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Ending, Outcome
from flowcloud.workers.pipeline.stage import AfterReader, Stage, StartReader

log = logging.getLogger(__name__)


class RecordStage(Stage):
    """Marks the job running, unless it already finished or was cancelled (then it ends, skipped:
    a redelivery never calls the provider again), and writes its outcome. Every write goes
    through the store's write-unless-finished script, so a finished record never changes."""

    def __init__(self, store: JobStore, config: Config) -> None:
        self.store = store
        self.config = config

    def start(self, job: Job, pipe: RedisPipeline) -> StartReader:
        read = self.store.write_in(pipe, job.id, running({"attempts": job.attempt, "worker": job.worker}))

        def started(replies: Iterator[Any]) -> Outcome | None:
            if read(replies):
                return None
            log.info("job %s already finished or was cancelled; not calling the provider again", job.id)
            return Outcome.skipped()

        return started

    def after(self, job: Job, outcome: Outcome, pipe: RedisPipeline) -> AfterReader | None:
        fields = self.fields(job, outcome)
        if fields is None:
            return None
        return self.store.write_in(pipe, job.id, {**fields, **job.record_fields})

    def fields(self, job: Job, outcome: Outcome) -> dict[str, Any] | None:
        """What the record says of ``outcome``; None when nothing is to be written."""
        if outcome.ending is Ending.SUCCEEDED:
            answer = answer_fields(job, outcome)
            return succeeded({**answer, "flow": job.flow, "attempts": job.attempt,
                              "cost_usd": outcome.cost_usd, **self.call_savings(job, answer["usage"]),
                              **({} if outcome.answer.batch_size is None else {"batch_size": outcome.answer.batch_size})})
        if outcome.ending is Ending.CACHED:  # an identical job paid for it: no attempt of its own spent
            # Found on its first delivery, the answer was there before it: the cache's. Found after a wait
            # or a retry, an identical job in flight meanwhile answered it.
            lever = Lever.CACHE if job.first_delivery else Lever.COALESCING
            return succeeded({**outcome.cached, "flow": job.flow, "cached": True, "cost_usd": 0.0,
                              "attempts": job.attempt - 1,
                              "savings_usd": savings.answered_by_another(self.config, outcome.cached, lever) or None})
        if outcome.ending is Ending.FAILED:
            log.warning("job %s failed on attempt %d: %s", job.id, job.attempt, outcome.error)
            provider = getattr(outcome.error, "provider", None)
            return failed(outcome.error, {"attempts": job.attempt, "model": job.model or job.asked("model"),
                                          **({"provider": provider} if provider else {})})
        if outcome.ending is Ending.RETRY:
            log.info("job %s: %s; attempt %d in %.2f s", job.id, outcome.error.kind, job.attempt + 1,
                     outcome.not_before - time.time())
            metrics.record_retry(outcome.error)
            return {"status": JobStatus.RETRYING, "attempts": job.attempt, "error": outcome.error.to_record(),
                    "next_attempt_at": outcome.not_before}
        if outcome.ending is Ending.WAIT:
            return {"status": JobStatus.QUEUED, "next_attempt_at": outcome.not_before}
        return None  # SKIPPED: the record is someone else's to finish

    def call_savings(self, job: Job, usage: dict[str, Any]) -> dict[str, Any]:
        """The record's ``savings_usd`` for a call: cached input, and the local tier's against the cloud's."""
        local = job.route is not None and job.route.hybrid is not None and job.route.hybrid["tier"] == "local"
        cloud = savings.cheapest_cloud(self.config, job.group) if local and job.group is not None else None
        saved = savings.of_call(job.provider.config.price(job.model), usage, cloud)
        return {"savings_usd": saved} if saved else {}


def answer_fields(job: Job, outcome: Outcome) -> dict[str, Any]:
    """A succeeded job's answer as the record and the cache keep it: priced and recorded under the
    configured model name, since providers often answer with a dated variant."""
    answer = outcome.answer
    return {job.kind.field: answer.value, "provider": job.provider.name, "model": job.model,
            "usage": answer.usage.as_dict()}
