"""The document runs' tasks: a scheduled run's hops, the Batch API poll, and a CLI run's provider batch.

The runs themselves are ``flowcloud.workers.summaries.runs``; each task hands its
message to them, and ``summarize_run`` sends the next hop the run asks for.
"""

from __future__ import annotations

from flowcloud.workers.batch_runs import run as batch_runs
from flowcloud.workers.core.celery_app import POLL_BATCHES_TASK, START_BATCH_RUN_TASK, SUMMARIZE_RUN_TASK, app
from flowcloud.workers.summaries.runs import batch, scheduled


@app.task(name=SUMMARIZE_RUN_TASK, ignore_result=True)
def summarize_run(schedule: str, run_id: str | None = None) -> None:
    """Start the schedule's run (no ``run_id``: Beat's message) or advance it by one hop."""
    run_id = scheduled.hop(schedule, run_id)
    if run_id is not None:
        summarize_run.apply_async(args=[schedule, run_id], countdown=scheduled.HOP_SECONDS)


@app.task(name=POLL_BATCHES_TASK, ignore_result=True)
def poll_batches() -> None:
    """Advance every open Batch API run once, then write the summaries that came back for scheduled runs
    and finish those done."""
    batch_runs.advance_open_runs()
    scheduled.poll_batch_runs()


@app.task(name=START_BATCH_RUN_TASK)
def start_batch_run(run_id: str, documents: list[dict[str, str]], model: str | None, flow: str | None) -> str | None:
    """Send a CLI run's documents to the provider as a Batch API run; returns why it was refused, or None."""
    return batch.start_provider_batch(run_id, documents, model, flow)
