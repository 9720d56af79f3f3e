"""The ``run_flow`` task: a whole Langflow flow on a flow worker, its outputs in the job's record.

Flows run on their own queue and pool (``flowcloud worker --flows``): building
and running a graph is CPU work that must not starve the I/O-bound completion
workers. A flow is not retried: its components own their retries (a queued
completion inside it is a job of its own).
"""

from __future__ import annotations

import logging

from flowcloud.workers.core.jobspec import FlowSpec, parse
from flowcloud.workers import runtime
from flowcloud.workers.core.celery_app import RUN_FLOW_TASK, app
from flowcloud.workers.core.errors import FlowFailed, InvalidJob
from flowcloud.workers.core.limits import check_flow_run
from flowcloud.workers.flow_runner import run_flow as execute

log = logging.getLogger(__name__)


@app.task(name=RUN_FLOW_TASK, bind=True, ignore_result=True, throws=(InvalidJob, FlowFailed))
def run_flow(self, request: dict) -> None:
    job_id = self.request.id
    store = runtime.current().store
    if not store.start(job_id, attempts=1, worker=self.request.hostname):
        log.info("flow job %s already finished or was cancelled; not running it again", job_id)
        return
    try:
        spec = parse(FlowSpec, request)
        check_flow_run(runtime.current().config, spec)  # its client may not have checked
        outcome = execute(spec.flow, spec.input_value)
    except (InvalidJob, FlowFailed) as exc:
        store.fail(job_id, exc)
        raise
    store.succeed(job_id, text=outcome.text, outputs=outcome.outputs, flow=spec.name)
