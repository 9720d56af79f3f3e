"""One attempt at one job, and how the job is tried again later.

A job's first attempt runs either in a Celery task of its own (``complete``,
``embed``) or inside a bundle that carried many jobs in one message
(``flowcloud.tasks.bundle``). Either way a later attempt is a Celery countdown, never a
sleep: the task's own retry when it has a task, and otherwise a new message for
that task under the job's id, so from its second attempt on a bundled job is an
ordinary job that Flower shows under its own id.
"""

from __future__ import annotations

import time
from typing import NoReturn

from celery import Task
from celery.exceptions import Retry

from flowcloud.workers.core.jobspec import parse_job
from flowcloud.workers.core.config import get_config
from flowcloud.workers.core.retry import countdown_hop


class Attempt:
    """Attempt ``number`` at the job a Celery task of its own carries: the job id is the task id."""

    def __init__(self, task: Task, number: int) -> None:
        self.task = task
        self.number = number
        self.job_id: str = task.request.id
        self.worker: str | None = task.request.hostname

    def again(self, request: dict, number: int, not_before: float, exc: Exception | None) -> NoReturn:
        """Run attempt ``number`` no sooner than ``not_before`` (epoch seconds); always raises Celery's Retry.

        ``exc`` is the error that made a retry necessary, None for a plain wait.
        """
        raise self.task.retry(args=[request], countdown=_countdown(not_before), exc=exc,
                              **_retry_message(request, number, not_before))


class BundledAttempt(Attempt):
    """The first attempt at a job that arrived in a bundle: ``task`` is the task that runs the job's
    later attempts on its own."""

    def __init__(self, task: Task, job_id: str, worker: str | None) -> None:
        self.task = task
        self.number = 1
        self.job_id = job_id
        self.worker = worker

    def again(self, request: dict, number: int, not_before: float, exc: Exception | None) -> NoReturn:
        countdown = _countdown(not_before)
        # Sent as a retry of the bundle's delivery, so nothing downstream takes it for a new job
        # (its queue wait, for one, was measured when the bundle arrived).
        self.task.apply_async(args=[request], task_id=self.job_id, countdown=countdown, retries=1,
                              **_retry_message(request, number, not_before))
        raise Retry(exc=exc, when=countdown)


def _countdown(not_before: float) -> float:
    # A wait longer than one countdown may safely last is made of several hops.
    return max(countdown_hop(not_before - time.time(), get_config().worker.visibility_timeout), 0.0)


def _retry_message(request: dict, number: int, not_before: float) -> dict:
    return {
        "kwargs": {"attempt": number, "not_before": not_before},
        # Flower shows these instead of the arguments: never the whole prompt.
        "argsrepr": parse_job(request).preview(),
        "kwargsrepr": f"{{'attempt': {number}}}",
    }
