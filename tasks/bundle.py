"""Many jobs in one Celery message: what keeps a worker's cost per job low under a large ``submit_many``.

Receiving, acknowledging and reporting one message costs a Celery worker about
as much CPU as flowcloud's whole work on a provider call, so ``client.submit_many``
sends its jobs ``worker.bundle_size`` to a message. The worker runs a bundle's
jobs side by side on its job threads (``runtime.job_runner``), each exactly as
its own task would run it: its own record, its own failure, its own metrics. A
job that must wait or be retried leaves the bundle as an ordinary task under its
own id (``tasks.attempt.BundledAttempt``). The message is acknowledged once every
job in it has ended, so a bundle on a worker that is lost midway comes back, and
its jobs that had finished are not run again.
"""

from __future__ import annotations

import logging
from typing import Callable

from celery import Task
from celery.exceptions import Retry

from tasks.attempt import BundledAttempt
from tasks.complete import complete, embed, run_completion, run_embedding
from workers import metrics, runtime
from workers.celery_app import BUNDLE_TASK, COMPLETE_TASK, EMBED_TASK, app
from workers.errors import BudgetExceeded, FlowcloudError, InternalError, InvalidJob, ProviderError
from workers.guard import redact

log = logging.getLogger(__name__)
# The task each kind of bundled job belongs to (its later attempts run there), and how it runs.
RUNNERS: dict[str, tuple[Task, Callable[[BundledAttempt, dict], None]]] = {
    COMPLETE_TASK: (complete, run_completion),
    EMBED_TASK: (embed, run_embedding),
}
# Failures the job's record already tells in full: one log line, no traceback.
RECORDED_FAILURES = (ProviderError, InvalidJob, BudgetExceeded)


@app.task(name=BUNDLE_TASK, bind=True, ignore_result=True)
def bundle(self, task_name: str, jobs: list[list]) -> None:
    """Run ``jobs``, pairs of (job id, request), as first attempts of ``task_name``; returns once all ended."""
    if task_name not in RUNNERS:
        error = InvalidJob(f"a bundle of {task_name!r} jobs: only {', '.join(RUNNERS)} jobs travel in bundles")
        for job_id, _ in jobs:
            runtime.job_store().fail(job_id, error, attempts=1)
        raise error
    task, run = RUNNERS[task_name]
    queue = metrics.queue_of(self.request)
    runner = runtime.job_runner()
    running = [runner.submit(run_one, run, BundledAttempt(task, job_id, self.request.hostname), request, queue)
               for job_id, request in jobs]
    for job in running:
        job.result()


def run_one(run: Callable[[BundledAttempt, dict], None], attempt: BundledAttempt, request: dict,
            queue: str) -> None:
    """One bundled job, counted in the metrics as its own task would be; never raises."""
    metrics.record_task_start(queue, first_delivery=True)
    try:
        run(attempt, request)
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
