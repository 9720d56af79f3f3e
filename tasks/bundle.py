"""Many jobs in one Celery message: what keeps a worker's cost per job low under a large ``submit_many``.

Receiving, acknowledging and reporting one message costs a Celery worker about
as much CPU as flowcloud's whole work on a provider call, so ``client.submit_many``
sends its jobs ``worker.bundle_size`` to a message. The worker starts all of a
bundle's jobs in one round trip (each marked running, its cached answer looked
up), then runs them side by side on its job threads (``runtime.job_runner``),
each as its own task would run it: its own record, its own failure, its own
metrics. (All of a bundle's jobs show as running from that moment; on a worker
whose job threads are all busy, some wait there for one.) A
job that must wait or be retried leaves the bundle as an ordinary task under its
own id (``tasks.attempt.BundledAttempt``). The message is acknowledged once every
job in it has ended, so a bundle on a worker that is lost midway comes back, and
its jobs that had finished are not run again.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

from celery import Task
from celery.exceptions import Retry

from tasks.attempt import BundledAttempt
from tasks.complete import Job, complete, complete_started, embed, embed_started, queue_start
from tasks.jobspec import CompletionSpec, EmbeddingSpec, parse_embedding_spec, parse_spec
from workers import metrics, runtime
from workers.celery_app import BUNDLE_TASK, COMPLETE_TASK, EMBED_TASK, app
from workers.errors import BudgetExceeded, FlowcloudError, InternalError, InvalidJob, ProviderError
from workers.guard import redact
from workers.redis_conn import replies_of

log = logging.getLogger(__name__)


class Kind:
    """A kind of job that travels in bundles: the task its later attempts run in, and how it runs."""

    def __init__(self, task: Task, parse: Callable[[dict], CompletionSpec | EmbeddingSpec],
                 model_kind: Literal["chat", "embedding"], run: Callable[[BundledAttempt, dict, Job], None]) -> None:
        self.task, self.parse, self.model_kind, self.run = task, parse, model_kind, run


KINDS = {
    COMPLETE_TASK: Kind(complete, parse_spec, "chat", complete_started),
    EMBED_TASK: Kind(embed, parse_embedding_spec, "embedding", embed_started),
}
# Failures the job's record already tells in full: one log line, no traceback.
RECORDED_FAILURES = (ProviderError, InvalidJob, BudgetExceeded)


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
    runner = runtime.job_runner()
    running = [runner.submit(run_one, kind, attempt, request, job, queue) for attempt, request, job in started]
    for job in running:
        job.result()


def start_all(kind: Kind, attempts: list[tuple[BundledAttempt, dict]], queue: str,
              ) -> list[tuple[BundledAttempt, dict, Job]]:
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


def run_one(kind: Kind, attempt: BundledAttempt, request: dict, job: Job, queue: str) -> None:
    """A started job on one of the process's job threads; never raises."""
    with outcome_of(attempt, queue):
        kind.run(attempt, request, job)


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
