"""The base of every pipeline stage: hooks that do nothing until a stage overrides them.

A job runs through the stages in their declared order, in the spirit of
dramatiq's middleware:

1. ``start(job, pipe)``, every stage in order: queue this stage's Redis work on
   the job's first round trip (which many jobs of a bundle share). Returns a
   reader of exactly those replies, or None. A reader may end the job by
   returning an ``Outcome``; every reader still runs, so each sees its own replies.
2. ``before(job)``, in order, until one returns an ``Outcome``: work of the
   stage's own before the provider call (a budget reservation). An outcome here
   ends the job without a call.
3. The call (``flowcloud.workers.pipeline.call``), unless a stage ended the job;
   then ``review(job, outcome)``, in order: a stage may replace the call's
   outcome (a local answer that fails its check goes on to the cloud tier).
4. ``after(job, outcome, pipe)``, every stage, in reverse order, whatever the
   outcome and however far the job got: give back what the stage took, record
   what it must. Queued on the job's last round trip; returns a reader or None.

A stage that takes something (a flight, a hold) gives it back in its ``after``,
its one place, reading on the job what it took: ``after`` runs on every exit
path, also for a job that ended before this stage's ``before`` ran. A hook that
raises is logged with its traceback: a ``start`` or ``before`` that raises fails
the job with ``internal``; an ``after`` that raises leaves the outcome as it is,
and the other stages' ``after`` hooks still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from redis.client import Pipeline as RedisPipeline

    from flowcloud.workers.pipeline.job import Job
    from flowcloud.workers.pipeline.outcome import Outcome

# Reads a hook's own replies from the round trip it queued its commands on.
StartReader = Callable[[Iterator[Any]], "Outcome | None"]
AfterReader = Callable[[Iterator[Any]], Any]  # what it returns is not used


class Stage:
    """One step around a job's provider call."""

    def start(self, job: Job, pipe: RedisPipeline) -> StartReader | None:
        return None

    def before(self, job: Job) -> Outcome | None:
        return None

    def review(self, job: Job, outcome: Outcome) -> Outcome | None:
        return None

    def after(self, job: Job, outcome: Outcome, pipe: RedisPipeline) -> AfterReader | None:
        return None
