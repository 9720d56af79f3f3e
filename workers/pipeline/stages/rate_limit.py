"""Global rate limits before the call: a job whose deployment is at its rpm or tpm waits for its slot.

Runs after the route stage has chosen the job's deployment (``job.deployment``:
the first of its model's group when no route stage chose another). The limiter
(``flowcloud.workers.rate_limits``) admits the job, or books it the earliest
slot the deployment's limits allow: the job then ends in a ``wait`` until that
slot, the same attempt as a Celery countdown, holding no worker slot, and is
admitted when it comes back. A deployment without limits costs its jobs
nothing; a limited one costs one Redis call of its own, since the deployment
is known only once the stages before this one have run.

A job's tokens are its estimated prompt tokens and its ``max_tokens`` (the
configuration's ``budget_output_tokens`` when it sets none), counted when it is
admitted. Nothing is given back after the call: a call that was admitted was made.
A job that shares a lane's call with others counts as a call of its own, which errs
on the safe side.
"""

from __future__ import annotations

from flowcloud.workers import metrics
from flowcloud.workers.core.config import Config
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Outcome
from flowcloud.workers.pipeline.stage import Stage
from flowcloud.workers.rate_limits import Limiter, limited


class RateLimitStage(Stage):
    def __init__(self, limiter: Limiter, config: Config) -> None:
        self.limiter = limiter
        self.config = config

    def before(self, job: Job) -> Outcome | None:
        deployment = job.deployment
        if not limited(deployment):
            return None
        wait = self.limiter.acquire(job.id, deployment, self.tokens(job))
        if wait <= 0:
            return None
        metrics.record_rate_limited(deployment.id)
        return Outcome.wait(wait)

    def tokens(self, job: Job) -> int:
        output = job.output_tokens()
        return job.prompt_tokens() + (self.config.budget_output_tokens if output is None else output)
