"""Many jobs in one Celery message: what keeps a worker's cost per job low under a large ``submit_many``.

Receiving, acknowledging and reporting one message costs a Celery worker about
as much CPU as flowcloud's whole work on a provider call, so ``client.submit_many``
sends its jobs ``worker.bundle_size`` to a message. The worker starts all of a
bundle's jobs in one round trip (each marked running, its cached answer looked
up), then runs them side by side on its job threads (``runtime.job_runner``),
each as its own task would run it: its own record, its own failure, its own
metrics. (All of a bundle's jobs show as running from that moment; on a worker
whose job threads are all busy, some wait there for one.) Completions that make
a full batch among themselves go as one unit on one thread. A
job that must wait or be retried leaves the bundle as an ordinary task under its
own id (``flowcloud.tasks.attempt.BundledAttempt``). The message is acknowledged once every
job in it has ended, so a bundle on a worker that is lost midway comes back, and
its jobs that had finished are not run again.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

from celery import Task
from celery.exceptions import Retry

from flowcloud.workers.lanes import lane as batching
from flowcloud.tasks.attempt import BundledAttempt
from flowcloud.workers.lanes.queue import ALONE, Entry
from flowcloud.tasks.complete import (
    Call,
    Job,
    ask,
    complete,
    embed,
    embed_started,
    finish_call,
    prepare_call,
    queue_start,
)
from flowcloud.workers.core.jobspec import CompletionSpec, EmbeddingSpec, parse_embedding_spec, parse_spec
from flowcloud.workers import metrics
from flowcloud.workers import runtime
from flowcloud.workers.core.celery_app import BUNDLE_TASK, COMPLETE_TASK, EMBED_TASK, app
from flowcloud.workers.core.errors import BudgetExceeded, FlowcloudError, InternalError, InvalidJob, ProviderError
from flowcloud.workers.core.guard import redact
from flowcloud.workers.core.redis_conn import replies_of

log = logging.getLogger(__name__)
# A started job of a bundle.
Started = tuple[BundledAttempt, dict, Job]
# A completion of a bundle, prepared for its call.
Member = tuple[BundledAttempt, dict, Call]


# Failures the job's record already tells in full: one log line, no traceback.
RECORDED_FAILURES = (ProviderError, InvalidJob, BudgetExceeded)


class Kind:
    """A kind of job that travels in bundles: the task its later attempts run in, how its request is
    read, and how a bundle's started jobs of this kind are put on the job threads."""

    def __init__(self, task: Task, parse: Callable[[dict], CompletionSpec | EmbeddingSpec],
                 model_kind: Literal["chat", "embedding"],
                 run: Callable[[Executor, list[Started], str], list[Future]]) -> None:
        self.task, self.parse, self.model_kind, self.run = task, parse, model_kind, run




@app.task(name=BUNDLE_TASK, bind=True, ignore_result=True)
def bundle(self, task_name: str, jobs: list[list]) -> None:
    """Run ``jobs``, pairs of (job id, request), as first attempts of ``task_name``; returns once all ended."""
    kind = KINDS.get(task_name)
    if kind is None:
        error = InvalidJob(f"a bundle of {task_name!r} jobs: only {', '.join(KINDS)} jobs travel in bundles")
        for job_id, _ in jobs:
            runtime.job_store().fail(job_id, error, attempts=1)
        raise error
    queue = metrics.queue_of(self.request)
    started = start_all(kind, [(BundledAttempt(kind.task, job_id, self.request.hostname), request)
                               for job_id, request in jobs], queue)
    for job in kind.run(runtime.job_runner(), started, queue):
        job.result()


def start_all(kind: Kind, attempts: list[tuple[BundledAttempt, dict]], queue: str) -> list[Started]:
    """Start every job of a bundle in one round trip; the ones that go on to call their provider."""
    pipe = runtime.job_store().client.pipeline(transaction=False)
    queued: list[tuple[BundledAttempt, dict, Callable[[Iterator[Any]], Job | None]]] = []
    for attempt, request in attempts:
        with outcome_of(attempt, queue):
            queued.append((attempt, request, queue_start(pipe, attempt, request, kind.parse, kind.model_kind)))
    replies = replies_of(pipe)
    ready = []
    for attempt, request, started in queued:
        job = None
        with outcome_of(attempt, queue, measures_wait=True):
            job = started(replies)
        if job is not None:
            ready.append((attempt, request, job))
    return ready


def run_completions(runner: Executor, started: list[Started], queue: str) -> list[Future]:
    """A bundle's started completions on the job threads. Its own full batches (``max_size`` jobs
    for one lane) each go as one unit on one thread: the batch is there already, so nobody waits
    for it to form, and it holds one thread, not one per job. The others run one a thread."""
    calls: list[Member] = []
    for attempt, request, job in started:
        with outcome_of(attempt, queue):
            calls.append((attempt, request, prepare_call(attempt, job)))
    by_lane: dict[str, list[Member]] = defaultdict(list)
    singles: list[Member] = []
    for member in calls:
        lane = member[2].lane
        (by_lane[lane.window().key] if lane is not None and lane.batched else singles).append(member)
    running = []
    for members in by_lane.values():
        size = members[0][2].lane.max_size
        whole = len(members) - len(members) % size
        running += [runner.submit(run_batch_of, members[first:first + size], queue) for first in range(0, whole, size)]
        singles += members[whole:]
    running += [runner.submit(run_call, attempt, request, call, queue) for attempt, request, call in singles]
    return running


def run_batch_of(members: list[Member], queue: str) -> None:
    """One provider call for a full batch of a bundle's jobs, then each job finished with its own outcome."""
    lane = members[0][2].lane
    metrics.record_jobs_waiting(queue, len(members))
    try:
        outcomes = batching.run_batch(lane, [Entry(attempt.job_id, call.prompt, reply="")
                                             for attempt, _, call in members])
    except Exception:
        log.exception("a batch of %d jobs for %s broke: each goes alone", len(members), lane.model)
        outcomes = [ALONE] * len(members)
    finally:
        metrics.record_jobs_waiting(queue, -len(members))
    for (attempt, request, call), outcome in zip(members, outcomes):
        with outcome_of(attempt, queue):
            finish_call(attempt, request, call, functools.partial(batching.answer_from, lane, call.prompt, outcome))


def run_call(attempt: BundledAttempt, request: dict, call: Call, queue: str) -> None:
    """One prepared completion on a job thread; never raises."""
    with outcome_of(attempt, queue):
        finish_call(attempt, request, call, functools.partial(ask, call, attempt.job_id))


def run_embeddings(runner: Executor, started: list[Started], queue: str) -> list[Future]:
    """A bundle's started embeddings, one a thread (their batches form in the lanes)."""
    return [runner.submit(run_started_embedding, attempt, request, job, queue) for attempt, request, job in started]


def run_started_embedding(attempt: BundledAttempt, request: dict, job: Job, queue: str) -> None:
    """One started embedding on a job thread; never raises."""
    with outcome_of(attempt, queue):
        embed_started(attempt, request, job)


@contextmanager
def outcome_of(attempt: BundledAttempt, queue: str, measures_wait: bool = False) -> Iterator[None]:
    """What Celery does around a task, for one bundled job's step: counted in flight, its queue wait
    measured when it starts running (``measures_wait``), its failure recorded; nothing escapes."""
    metrics.record_task_start(queue, first_delivery=measures_wait)
    try:
        yield
    except Retry as later:  # it goes on as a task of its own
        metrics.record_retry(later.exc)
    except RECORDED_FAILURES as exc:
        log.info("job %s failed: %s", attempt.job_id, exc)
    except Exception as exc:
        log.exception("job %s failed on an unexpected error", attempt.job_id)
        reason = exc if isinstance(exc, FlowcloudError) else InternalError(redact(f"{type(exc).__name__}: {exc}"))
        runtime.job_store().fail(attempt.job_id, reason, attempts=attempt.number)
    finally:
        metrics.record_task_end()


# Last: each kind names the functions above that run it.
KINDS = {
    COMPLETE_TASK: Kind(complete, parse_spec, "chat", run_completions),
    EMBED_TASK: Kind(embed, parse_embedding_spec, "embedding", run_embeddings),
}
