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
from pathlib import Path
from typing import Any

from tasks.cache import AnswerCache, cache_key
from tasks.jobspec import CompletionSpec, build_flow_spec, build_spec
from tasks.records import JobRecord, JobStatus, JobStore
from workers.config import Config, get_config
from workers.errors import InvalidJob, JobNotFound, JobTimeout
from workers.redis_conn import connect

__all__ = ["submit", "submit_many", "submit_flow", "status", "result", "wait_all", "cancel"]


def _store() -> JobStore:
    return JobStore.open(get_config())


def submit(
    prompt: str | list[dict],
    model: str | None = None,
    flow: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    cache: bool = True,
    **options: Any,
) -> str:
    """Queue a completion and return its job id at once.

    ``prompt`` is a string or an OpenAI-style list of messages; ``options`` are
    generation parameters (temperature, top_p, stop, seed, ...). Bad input raises
    ``InvalidJob`` here, before anything is queued. An identical request answered
    before (same model, messages, parameters and flow) finishes at once from the
    cache, without a queued task; ``cache=False`` always calls the provider.
    """
    return submit_many([prompt], model=model, flow=flow, max_tokens=max_tokens, system=system, cache=cache,
                       **options)[0]


def submit_many(
    prompts: list[str | list[dict]],
    model: str | None = None,
    flow: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    cache: bool = True,
    **options: Any,
) -> list[str]:
    """Queue one completion per prompt with shared parameters; job ids in input order.

    Every prompt is validated before any is queued, so a bad one queues nothing.
    Cache hits are looked up in one round trip and finish without being queued.
    """
    from workers.celery_app import COMPLETE_TASK

    config = get_config()
    if model is not None and model not in config.model_names():
        raise InvalidJob(f"no provider serves model {model!r}; configured models: {', '.join(config.model_names())}")
    specs = [build_spec(p, model=model, flow=flow, max_tokens=max_tokens, system=system, options=options,
                        cache=cache) for p in prompts]
    return [_finish_from_cache(spec, answer) if answer
            else _send(COMPLETE_TASK, spec.model_dump(mode="json"), spec.preview(), spec.model, spec.flow)
            for spec, answer in zip(specs, _cached_answers(config, specs))]


def _cached_answers(config: Config, specs: list[CompletionSpec]) -> list[dict[str, Any] | None]:
    if not config.cache.enabled:
        return [None] * len(specs)
    keys = [cache_key(s, s.model or config.default_model) if s.cache else None for s in specs]
    cache = AnswerCache(connect(config.redis_url_or_embedded()), config.cache.ttl)
    found = iter(cache.get_many([key for key in keys if key]))
    return [next(found) if key else None for key in keys]


def _finish_from_cache(spec: CompletionSpec, answer: dict[str, Any]) -> str:
    """A job finished by a cached answer: no task, no provider call, no cost."""
    now = time.time()
    job_id = str(uuid.uuid4())
    _store().create(JobRecord(job_id=job_id, status=JobStatus.SUCCEEDED, cached=True, flow=spec.flow,
                              cost_usd=0.0, submitted_at=now, finished_at=now, **answer))
    return job_id


def submit_flow(flow_json: dict | str | Path, input_value: str = "", flow_name: str | None = None) -> str:
    """Queue a whole Langflow flow (its JSON, or a path to it) to run on the flow workers."""
    from workers.celery_app import RUN_FLOW_TASK

    spec = build_flow_spec(flow_json, input_value, flow_name)
    return _send(RUN_FLOW_TASK, spec.model_dump(mode="json"), spec.preview(), None, spec.name)


def _send(task_name: str, payload: dict, preview: str, model: str | None, flow: str | None) -> str:
    from workers.celery_app import app  # Celery costs ~0.2 s; only submitters pay it

    job_id = str(uuid.uuid4())
    _store().create(JobRecord(job_id=job_id, status=JobStatus.QUEUED, model=model, flow=flow,
                              submitted_at=time.time()))
    app.send_task(task_name, args=[payload], task_id=job_id, argsrepr=preview, kwargsrepr="{}")
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


def wait_all(job_ids: list[str], timeout: float | None = None) -> list[dict[str, Any]]:
    """Records of ``job_ids`` in order, once all finish or ``timeout`` runs out.

    Unlike ``result`` this never raises for time: a job still going at the
    deadline is returned as it stands (its ``status`` says so).
    """
    store = _store()
    deadline = None if timeout is None else time.monotonic() + timeout
    records = []
    for job_id in job_ids:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        record = store.wait(job_id, left)
        if record is None:
            raise JobNotFound(job_id)
        records.append(record.as_dict())
    return records


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
