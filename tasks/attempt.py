"""How a job is tried again later: always a Celery countdown, never a sleep in a worker slot.

A job whose pipeline ended in a retry or a wait goes back to the broker: the
task's own retry when the job has a task of its own, and otherwise (a job that
arrived in a bundle) a new message for its kind's task under the job's id, so
from its second attempt on a bundled job is an ordinary job that Flower shows
under its own id.
"""

from __future__ import annotations

import time
from typing import NoReturn

from celery import Task

from flowcloud.workers import runtime
from flowcloud.workers.core.errors import InvalidJob
from flowcloud.workers.core.jobspec import parse_job
from flowcloud.workers.core.retry import countdown_hop
from flowcloud.workers.pipeline import Ending, Job, Outcome


def retry_task(task: Task, job: Job, outcome: Outcome) -> NoReturn:
    """Run the job's task again after ``outcome``'s countdown; raises Celery's Retry."""
    raise task.retry(args=[job.request], countdown=countdown(outcome.not_before), exc=outcome.error,
                     **retry_message(job, outcome))


def send_again(task: Task, job: Job, outcome: Outcome) -> None:
    """Send a bundled job on as a message of its own for ``task``, after ``outcome``'s countdown."""
    # Sent as a retry of the bundle's delivery, so nothing downstream takes it for a new job
    # (its queue wait, for one, was measured when the bundle arrived).
    task.apply_async(args=[job.request], task_id=job.id, countdown=countdown(outcome.not_before), retries=1,
                     **retry_message(job, outcome))


def countdown(not_before: float) -> float:
    # A wait longer than one countdown may safely last is made of several hops.
    return max(countdown_hop(not_before - time.time(), runtime.current().config.worker.visibility_timeout), 0.0)


def preview(job: Job) -> str:
    """The job's preview for Flower, masked as the client masks it; a job not read yet (the hop of a long
    wait) is read here."""
    try:
        spec = job.spec if job.spec is not None else parse_job(job.request)
    except InvalidJob:
        return ""
    settings = runtime.current().config.mask
    if settings is None:
        return spec.preview()
    from flowcloud.workers.core.masking import masked_preview  # phonenumbers: only workers that mask load it

    return masked_preview(spec, settings)


def retry_message(job: Job, outcome: Outcome) -> dict:
    number = job.attempt + 1 if outcome.ending is Ending.RETRY else job.attempt
    return {
        "kwargs": {"attempt": number, "not_before": outcome.not_before},
        # Flower shows these instead of the arguments: never the whole prompt; a routed job's
        # deployment, and the circuits it found open, in its task info.
        "argsrepr": preview(job),
        "kwargsrepr": repr({"attempt": number, **(job.route.summary() if job.route else {})}),
    }
