"""The ``complete`` and ``embed`` tasks: one job each, run through the job pipeline
(``flowcloud.workers.pipeline``).

A job that must run again (a retryable error, a wait for an identical job in
flight) becomes a Celery countdown, so a waiting job frees its worker slot. A
job that failed raises its error, so Flower shows the task as failed; the
job's record already says why.
"""

from __future__ import annotations

import time

from celery import Task

from flowcloud.tasks.attempt import retry_task
from flowcloud.workers import runtime
from flowcloud.workers.core.celery_app import COMPLETE_TASK, EMBED_TASK, app
from flowcloud.workers.core.errors import BudgetExceeded, InternalError, InvalidJob, MaskingFailed, ProviderError
from flowcloud.workers.metrics import queue_of
from flowcloud.workers.pipeline import CHAT, EMBEDDING, Ending, Job, Kind, Outcome

# Failures the job's record tells in full: one log line, no traceback.
RECORDED_FAILURES = (ProviderError, InvalidJob, BudgetExceeded, MaskingFailed, InternalError)


@app.task(name=COMPLETE_TASK, bind=True, ignore_result=True, max_retries=None, throws=RECORDED_FAILURES)
def complete(self: Task, request: dict, attempt: int = 1, not_before: float | None = None) -> None:
    run(self, Job(self.request.id, request, CHAT, attempt), not_before)


@app.task(name=EMBED_TASK, bind=True, ignore_result=True, max_retries=None, throws=RECORDED_FAILURES)
def embed(self: Task, request: dict, attempt: int = 1, not_before: float | None = None) -> None:
    run(self, Job(self.request.id, request, EMBEDDING, attempt), not_before)


def run(task: Task, job: Job, not_before: float | None) -> None:
    if not_before is not None and not_before > time.time():  # the rest of a wait longer than one countdown
        retry_task(task, job, Outcome(Ending.WAIT, not_before=not_before))
    job.worker, job.queue, job.first_delivery = task.request.hostname, queue_of(task.request), not task.request.retries
    outcome = runtime.current().pipeline.run(job)
    if outcome.ending.later:
        retry_task(task, job, outcome)
    if outcome.ending is Ending.FAILED:
        raise outcome.error


# Each kind of job and the task that runs it alone: a bundled job's later attempts run there.
TASKS: dict[str, tuple[Kind, Task]] = {COMPLETE_TASK: (CHAT, complete), EMBED_TASK: (EMBEDDING, embed)}
