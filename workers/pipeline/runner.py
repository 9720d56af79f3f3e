"""The job pipeline: reads a job, runs it through its stages around the provider call, and returns
how it ended. It knows nothing of Celery: the task bodies turn a job that must run again into a countdown.

Round trips: every job's ``start`` hooks share one pipeline (all the jobs of a
bundle, too), and every ``after`` hook of the jobs that end together shares
another, so a job makes one round trip before its call and one after, whatever
the stages do in between. Each hook's reader gets exactly the replies of what it
queued, so a hook that fails cannot hand its neighbours the wrong replies.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

from redis.client import Pipeline as RedisPipeline

from flowcloud.workers import metrics
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.errors import FlowcloudError, InternalError, InvalidJob
from flowcloud.workers.core.guard import redact
from flowcloud.workers.core.jobspec import check_model
from flowcloud.workers.core.limits import check_spec
from flowcloud.workers.core.records import JobStore
from flowcloud.workers.pipeline.call import Call
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Outcome
from flowcloud.workers.pipeline.stage import Stage
from flowcloud.workers.routing.router import Router

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, stages: list[Stage], call: Call, store: JobStore, config: Config, router: Router) -> None:
        self.stages = stages
        self.call = call
        self.store = store
        self.config = config
        self.router = router
        # Only the hooks a stage overrides are called: a job pays nothing for a stage's do-nothing ones.
        self._starts = [stage.start for stage in stages if overrides(stage, "start")]
        self._befores = [stage.before for stage in stages if overrides(stage, "before")]
        self._reviews = [stage.review for stage in stages if overrides(stage, "review")]
        self._afters = [stage.after for stage in reversed(stages) if overrides(stage, "after")]

    def run(self, job: Job) -> Outcome:
        """One job from its request to its ending, on this thread."""
        outcome = self.start([job])[0] or self.proceed(job)
        self.end([(job, outcome)])
        return outcome

    def start(self, jobs: list[Job]) -> list[Outcome | None]:
        """Read each job and run every stage's ``start`` on one round trip for them all; per job, the
        outcome that ended it already, or None when it goes on (``proceed``). From here until ``end``
        the jobs count in flight."""
        trip = RoundTrip(self.store)
        outcomes = [self._queue_start(job, trip) for job in jobs]
        trip.execute()
        count_in_flight(jobs, running=True)
        for i, job in enumerate(jobs):
            with metrics.QueueWait(job.queue, job.first_delivery):  # measured by the running write
                outcomes[i] = outcomes[i] or trip.read(job)  # the first stage to end the job says how
        return outcomes

    def _queue_start(self, job: Job, trip: RoundTrip) -> Outcome | None:
        outcome = guarded(job, self.read, job)
        if outcome is not None:
            return outcome
        for start in self._starts:
            outcome = trip.queue(job, start, job)
            if outcome is not None:  # its start broke: the job goes no further
                return outcome
        return None

    def read(self, job: Job) -> Outcome | None:
        """Parse the job's request and find who serves its model; a request that cannot run fails, and
        so does one over an input limit (its client may not have checked)."""
        try:
            job.spec = job.kind.parse(job.request)
            check_spec(self.config, job.spec)
            asked = job.spec.model or self.config.default_model
            check_model(self.config, asked, job.kind.name)
            job.group = self.config.group(asked)
            first = job.group.deployments[0]  # unless the route stage chooses another
            job.serve_on(first, self.router.provider(first.provider))
        except InvalidJob as exc:
            return Outcome.failed(exc)
        return None

    def prepare(self, job: Job) -> Outcome | None:
        """Every stage's ``before``, in order, until one ends the job."""
        for before in self._befores:
            outcome = guarded(job, before, job)
            if outcome is not None:
                return outcome
        return None

    def proceed(self, job: Job) -> Outcome:
        """A started job from its stages' ``before`` hooks through its call and its review."""
        return self.prepare(job) or self.reviewed(job, guarded(job, self.call, job))

    def reviewed(self, job: Job, outcome: Outcome) -> Outcome:
        """The call's outcome as the stages' ``review`` hooks leave it, in order."""
        for review in self._reviews:
            replaced = guarded(job, review, job, outcome)
            outcome = replaced if isinstance(replaced, Outcome) else outcome
        return outcome

    def end(self, ended: list[tuple[Job, Outcome]]) -> None:
        """Every stage's ``after`` for each ended job, in reverse order, on one round trip for them all.
        A hook that breaks is logged; the others still run."""
        count_in_flight([job for job, _ in ended], running=False)  # first: they have ended, whatever Redis says
        trip = RoundTrip(self.store)
        for job, outcome in ended:
            for after in self._afters:
                trip.queue(job, after, job, outcome)
        trip.execute()
        for job, _ in ended:
            trip.read(job)


def count_in_flight(jobs: list[Job], running: bool) -> None:
    """Mark ``jobs`` running or not, and move the in-flight gauge once per queue for those that changed
    (a job ended twice, as a bundle's job whose countdown could not be sent is, counts down once)."""
    changed = Counter(job.queue for job in jobs if job.in_flight is not running)
    for job in jobs:
        job.in_flight = running
    for queue, count in changed.items():
        metrics.record_in_flight(queue, count if running else -count)


def overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


class RoundTrip:
    """Many hooks' commands on one Redis pipeline; each hook's reader then gets only its own replies."""

    def __init__(self, store: JobStore) -> None:
        self.pipe: RedisPipeline = store.client.pipeline(transaction=False)
        self._replies: list[Any] = []
        self._readers: dict[Job, list[tuple[str, Callable[[], Any]]]] = {}

    def queue(self, job: Job, hook: Callable[..., Any], *args: Any) -> Outcome | None:
        """``hook(*args, pipe)`` queues its commands and returns its reader, or None. A hook that raises
        leaves nothing queued, and the outcome that fails its job is returned."""
        first = len(self.pipe.command_stack)
        try:
            reader = hook(*args, self.pipe)
        except Exception as exc:
            del self.pipe.command_stack[first:]
            return broke(job, hook.__qualname__, exc)
        if reader is not None:
            last = len(self.pipe.command_stack)
            self._readers.setdefault(job, []).append(
                (hook.__qualname__, lambda: reader(iter(self._replies[first:last]))))
        return None

    def execute(self) -> None:
        if self.pipe.command_stack:
            self._replies = self.pipe.execute(raise_on_error=False)

    def read(self, job: Job) -> Outcome | None:
        """Once executed: every reader of ``job``'s hooks, in the order they were queued, each with its
        own replies; the first outcome one of them returns (a reader that raises fails the job)."""
        found = None
        for name, reader in self._readers.get(job, []):
            outcome = guarded(job, reader, name=name)
            found = found or (outcome if isinstance(outcome, Outcome) else None)
        return found


def guarded(job: Job, step: Callable[..., Any], *args: Any, name: str | None = None) -> Any:
    """``step(*args)``; if it raises, an outcome that fails the job with ``internal``, and the traceback
    goes to the log: one broken step fails one job, never its bundle."""
    try:
        return step(*args)
    except Exception as exc:
        return broke(job, name or getattr(step, "__qualname__", repr(step)), exc)


def broke(job: Job, name: str, exc: Exception) -> Outcome:
    log.error("job %s: %s broke", job.id, name, exc_info=exc)
    reason = exc if isinstance(exc, FlowcloudError) else InternalError(redact(f"{type(exc).__name__}: {exc}"))
    return Outcome.failed(reason)
