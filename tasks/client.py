"""The one way to submit a job and read its result, from Langflow, the CLI or any Python code.

Light to import: Celery's messaging and the record store only; no provider
adapters, no task modules, no Langflow. Submitting sends a message by task
name, so the caller never loads worker code.

    from tasks import client
    job_id = client.submit("Summarise this...", model="gpt-4o-mini", flow="nightly")
    record = client.result(job_id, timeout=120)
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from tasks.jobspec import build_spec
from tasks.records import JobRecord, JobStatus, JobStore
from workers.config import get_config
from workers.errors import JobNotFound, JobTimeout

__all__ = ["submit", "status", "result", "cancel"]


def _store() -> JobStore:
    return JobStore.open(get_config())


def submit(
    prompt: str | list[dict],
    model: str | None = None,
    flow: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    **options: Any,
) -> str:
    """Queue a completion and return its job id at once.

    ``prompt`` is a string or an OpenAI-style list of messages; ``options`` are
    generation parameters (temperature, top_p, stop, seed, ...). Bad input raises
    ``InvalidJob`` here, before anything is queued.
    """
    from workers.celery_app import COMPLETE_TASK, app  # Celery costs ~0.2 s; only submitters pay it

    spec = build_spec(prompt, model=model, flow=flow, max_tokens=max_tokens, system=system, options=options)
    job_id = str(uuid.uuid4())
    _store().create(JobRecord(job_id=job_id, status=JobStatus.QUEUED, model=spec.model,
                              flow=spec.flow, submitted_at=time.time()))
    app.send_task(
        COMPLETE_TASK,
        args=[spec.model_dump(mode="json")],
        task_id=job_id,
        argsrepr=spec.preview(),
        kwargsrepr="{}",
    )
    return job_id


def status(job_id: str) -> dict[str, Any]:
    """The job's current record (``status`` is queued, running, retrying, succeeded, failed or cancelled)."""
    record = _store().get(job_id)
    if record is None:
        raise JobNotFound(job_id)
    return record.as_dict()


def result(job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """The finished job's record, waiting up to ``timeout`` seconds (None: as long as it takes).

    A failed job is returned, not raised: its ``error`` says why. Raises
    ``JobTimeout`` if the job is still going when the time runs out.
    """
    record = _store().wait(job_id, timeout)
    if record is None:
        raise JobNotFound(job_id)
    if not record.status.finished:
        raise JobTimeout(job_id, timeout or 0.0, record.status.value)
    return record.as_dict()


def cancel(job_id: str) -> bool:
    """Cancel a job that has not finished; returns False if it already had."""
    from workers.celery_app import app

    store = _store()
    if store.get(job_id) is None:
        raise JobNotFound(job_id)
    cancelled = store.write(job_id, {"status": JobStatus.CANCELLED, "finished_at": time.time()})
    if cancelled:
        app.control.revoke(job_id)
    return cancelled
