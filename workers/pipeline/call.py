"""The provider call at the heart of the pipeline, and the retry decision on its error.

A job's answer comes from its own call or from its lane's shared one. A
``ProviderError`` becomes a retry (a countdown of ``max(Retry-After, backoff)``,
decided by ``flowcloud.workers.core.retry``) or, when it is permanent or the
attempts are spent, a failure; a routed job whose deployment failed it moves on
to the next deployment of its group at once, when one is left.
"""

from __future__ import annotations

from typing import Any

from flowcloud.workers.core.config_sections import RetryPolicy
from flowcloud.workers.core.errors import ProviderError
from flowcloud.workers.core.retry import retry_delay
from flowcloud.workers.lanes.lane import Answer, Lanes, answer_from
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Outcome


class Call:
    def __init__(self, lanes: Lanes, retry: RetryPolicy) -> None:
        self.lanes = lanes
        self.retry = retry

    def __call__(self, job: Job) -> Outcome:
        try:
            answer = self.ask(job)
        except ProviderError as exc:
            return self.on_error(job, exc)
        return self.on_answer(job, answer)

    def ask(self, job: Job) -> Answer | None:
        """The provider's answer for one job: its own call, or its share of its lane's; None if the
        job finished (was cancelled) while it waited for its lane."""
        if job.lane is not None:
            return self.lanes.answer(job.lane, job.id, job.text)
        completion = job.provider.chat([m.model_dump() for m in job.spec.messages], job.model,
                                       **job.spec.provider_params())
        return Answer(completion.text, completion.usage, finish_reason=completion.finish_reason)

    def from_batch(self, job: Job, result: dict[str, Any]) -> Outcome:
        """A job's outcome from its share of a batch's call (``Lanes.run_batch``): sent alone, it makes
        its own call here."""
        try:
            answer = answer_from(job.lane, job.text, result)
        except ProviderError as exc:
            return self.on_error(job, exc)
        return self.on_answer(job, answer)

    def on_answer(self, job: Job, answer: Answer | None) -> Outcome:
        if answer is None:
            return Outcome.skipped()
        return Outcome.succeeded(answer, job.provider.cost(job.model, answer.usage))

    def on_error(self, job: Job, error: ProviderError) -> Outcome:
        route = job.route
        if route is None:
            delay = retry_delay(error, job.attempt, self.retry)
        else:  # a routed job's attempts are counted per deployment, and it may move on to another
            delay = retry_delay(error, route.attempts_here, route.policy)
            if delay is None and route.move_on(error):
                return Outcome.retry(error, 0.0)
        return Outcome.failed(error) if delay is None else Outcome.retry(error, delay)
