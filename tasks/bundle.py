"""The ``bundle`` task: many completion or embedding jobs in one Celery message, as
``client.submit_many`` sends them (``flowcloud.workers.pipeline.bundle`` runs them).

Each job is the first attempt of its kind's task; one that must run again goes
on as a message of that task under its own id. The message is acknowledged once
every job in it has ended, so a bundle on a worker that is lost midway comes
back, and its jobs that had finished are not run again.
"""

from __future__ import annotations

import functools
from typing import NoReturn

from celery import Task

from flowcloud.tasks.attempt import send_again
from flowcloud.tasks.complete import TASKS
from flowcloud.workers import runtime
from flowcloud.workers.core.celery_app import BUNDLE_TASK, app
from flowcloud.workers.core.errors import InvalidJob, LimitExceeded
from flowcloud.workers.core.limits import check_batch
from flowcloud.workers.metrics import queue_of
from flowcloud.workers.pipeline import Job
from flowcloud.workers.pipeline.bundle import Bundle


@app.task(name=BUNDLE_TASK, bind=True, ignore_result=True, throws=(InvalidJob,))  # a refused bundle: one log line
def bundle(self: Task, task_name: str, jobs: list[list]) -> None:
    """Run ``jobs``, pairs of (job id, request), as first attempts of ``task_name``; returns once all ended."""
    here = runtime.current()
    if task_name not in TASKS:
        refuse(here, jobs, InvalidJob(f"a bundle of {task_name!r} jobs: only {', '.join(TASKS)} jobs travel in "
                                      "bundles"))
    try:  # a client sends no bundle over its jobs' batch limit; one that did not check may
        check_batch(here.config, len(jobs), [request.get("flow") if isinstance(request, dict) else None
                                             for _, request in jobs])
    except LimitExceeded as error:
        refuse(here, jobs, error)
    kind, task = TASKS[task_name]
    queue = queue_of(self.request)
    Bundle(here.pipeline, here.lanes, here.job_threads, functools.partial(send_again, task)).run(
        [Job(job_id, request, kind, worker=self.request.hostname, queue=queue) for job_id, request in jobs])


def refuse(here: runtime.Runtime, jobs: list[list], error: InvalidJob) -> NoReturn:
    """Fail every job of a bundle that cannot run as sent, then the bundle's task."""
    for job_id, _ in jobs:
        here.store.fail(job_id, error, attempts=1)
    raise error
