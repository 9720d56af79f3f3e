"""Submitting jobs and reading their records: the body of the public client (``flowcloud.client``).

Light to import: Celery's messaging and the record store only; no provider
adapters, no task modules, no Langflow. Submitting sends a message by task
name, so the caller never loads worker code. The engine submits its own
sub-jobs here too (a summary's chunks, a run's documents).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, TypeVar

from flowcloud.workers.core import degraded, limits, replica_fence, savings
from flowcloud.workers.core.cache import AnswerCache, cache_key
from flowcloud.workers.core.jobspec import (
    DEFAULT_PRIORITY,
    CompletionSpec,
    EmbeddingSpec,
    SummarizeSpec,
    apply_degraded,
    build_embedding_spec,
    build_flow_spec,
    build_spec,
    build_summarize_spec,
    check_model,
    embedding_model,
)
from flowcloud.workers.core.records import JobRecord, JobStatus, JobStore
from flowcloud.workers.core.config import Config, get_config
from flowcloud.workers.core.errors import InvalidJob, JobNotFound, JobTimeout
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.core.tally import Lever

Spec = TypeVar("Spec", CompletionSpec, EmbeddingSpec, SummarizeSpec)

__all__ = ["submit", "submit_many", "submit_flow", "status", "result", "wait_all", "cancel", "summarize", "embed"]


def _store() -> JobStore:
    return JobStore.open(get_config())


def submit(
    prompt: str | list[dict],
    model: str | None = None,
    flow: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    cache: bool = True,
    priority: int = DEFAULT_PRIORITY,
    **options: Any,
) -> str:
    """Queue a completion and return its job id at once.

    ``prompt`` is a string or an OpenAI-style list of messages; ``options`` are
    generation parameters (temperature, top_p, stop, seed, ...). Bad input raises
    ``InvalidJob`` here, before anything is queued. An identical request answered
    before (same model, messages, parameters and flow) finishes at once from the
    cache, without a queued task; ``cache=False`` always calls the provider.
    ``priority`` (0-9) matters only in degraded mode, which may refuse jobs
    below a configured priority (``InvalidJob``) or send them to a cheaper model.
    """
    return submit_many([prompt], model=model, flow=flow, max_tokens=max_tokens, system=system, cache=cache,
                       priority=priority, **options)[0]


def submit_many(
    prompts: list[str | list[dict]],
    model: str | None = None,
    flow: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    cache: bool = True,
    priority: int = DEFAULT_PRIORITY,
    **options: Any,
) -> list[str]:
    """Queue one completion per prompt with shared parameters; job ids in input order.

    Every prompt is validated before any is queued, so a bad one queues nothing;
    one over an input limit (``limits``) raises ``LimitExceeded``, as do more
    prompts than ``limits.batch``. Cache hits are looked up in one round trip and
    finish without being queued.
    """
    config = get_config()
    prompts = _batch_of(prompts, "prompts", "a list of prompts")
    limits.check_batch(config, len(prompts), [flow])
    check_model(config, model or config.default_model, "chat")
    specs = _within_limits(config, [build_spec(p, model=model, flow=flow, max_tokens=max_tokens, system=system,
                                               options=options, cache=cache, priority=priority) for p in prompts])
    mode = degraded.current(config)
    # Again as they will enter Redis: a cheaper model has its own window, a placeholder may be longer than
    # what it masks, and the worker checks what it receives.
    specs = _within_limits(config, _masked_at_submit(config, [apply_degraded(spec, mode, config) for spec in specs]))
    return _queue_completions(config, specs, [str(uuid.uuid4()) for _ in specs])


def _batch_of(items: Any, name: str, what: str) -> list[Any]:
    """``items`` (any iterable: a list, a generator) as a list, or ``InvalidJob`` when it is not one; a
    string or bytes would be a batch of characters, a mapping a batch of its keys."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise InvalidJob(f"{name}: give {what}, not {type(items).__name__}")
    return list(items)


def _within_limits(config: Config, specs: list[Spec]) -> list[Spec]:
    """``specs``, once each is found within the input limits of its flow; raises ``LimitExceeded``."""
    checker = limits.Checker(config)
    for spec in specs:
        checker.spec(spec)
    return specs


def _queue_completions(config: Config, specs: list[CompletionSpec], job_ids: list[str]) -> list[str]:
    """Finish the jobs the cache answers at once and queue the others; returns ``job_ids``."""
    from flowcloud.workers.core.celery_app import COMPLETE_TASK

    queued = []
    for spec, job_id, answer in zip(specs, job_ids, _cached_answers(config, specs)):
        if answer:
            _finish_from_cache(config, spec, answer, job_id)
        else:
            queued.append((job_id, spec))
    _send_jobs(COMPLETE_TASK, queued)
    return job_ids


def _cached_answers(config: Config, specs: list[CompletionSpec]) -> list[dict[str, Any] | None]:
    if not config.cache.enabled:
        return [None] * len(specs)
    keys = [cache_key(s, s.model or config.default_model) if s.cache else None for s in specs]
    cache = AnswerCache(connect(config.redis_url_or_embedded()), config.cache.ttl)
    found = iter(cache.get_many([key for key in keys if key]))
    return [next(found) if key else None for key in keys]


def _finish_from_cache(config: Config, spec: CompletionSpec, answer: dict[str, Any], job_id: str) -> None:
    """A job finished by a cached answer: no task, no provider call, no cost; it saved its naive call."""
    now = time.time()
    saved = savings.answered_by_another(config, answer, Lever.CACHE) or None
    _store().create(JobRecord(job_id=job_id, status=JobStatus.SUCCEEDED, cached=True, flow=spec.flow,
                              cost_usd=0.0, submitted_at=now, finished_at=now, savings_usd=saved, **answer))


def submit_flow(flow_json: dict | str | Path, input_value: str = "", flow_name: str | None = None) -> str:
    """Queue a whole Langflow flow (its JSON, or a path to it) to run on the flow workers; an input over
    ``limits.prompt_chars`` (the flow's own, else the global one) raises ``LimitExceeded``."""
    from flowcloud.workers.core.celery_app import RUN_FLOW_TASK

    spec = build_flow_spec(flow_json, input_value, flow_name)
    limits.check_flow_run(get_config(), spec)
    return _send(RUN_FLOW_TASK, spec.model_dump(mode="json"), spec.preview(), None, spec.name)


def summarize(
    text: str, model: str | None = None, flow: str | None = None, max_tokens: int | None = None,
    cache: bool = True,
) -> str:
    """Queue a summary of a text of any length and return its job id at once.

    A worker cuts the text into overlapping chunks, summarizes them in parallel
    and merges the summaries (in a tree when they are too long for one call);
    ``status(job_id)["progress"]`` shows ``chunks_done``, ``chunks_total`` and
    ``depth`` while it runs. ``max_tokens`` bounds the final summary. An empty
    text or a model no provider serves for chat raises ``InvalidJob`` here, and
    a text over ``limits.summary_chars`` ``LimitExceeded``.
    """
    from flowcloud.workers.core.celery_app import SUMMARIZE_TASK

    if model is not None:
        check_model(get_config(), model, "chat")
    config = get_config()
    spec = build_summarize_spec(text, model=model, flow=flow, max_tokens=max_tokens, cache=cache)
    limits.check_summary(config, spec)
    [spec] = _masked_at_submit(config, [spec])
    limits.check_summary(config, spec)
    return _send(SUMMARIZE_TASK, spec.model_dump(mode="json"), _preview(config, spec), spec.model, spec.flow)


def submit_children(parent_id: str, specs: list[CompletionSpec], child_ids: list[str]) -> None:
    """Queue completion jobs for a task that fans out, under ids it derives from its own.

    Ids that already have a record are skipped, so a redelivered parent finds
    the children it queued before instead of queueing them twice. The children
    are ordinary jobs: cache hits finish at once, the rest go to the queue.
    """
    store = _store()
    store.add_children(parent_id, child_ids)  # first, so a cancel arriving meanwhile reaches them all
    new = [(spec, child_id) for spec, child_id, record in zip(specs, child_ids, store.get_many(child_ids))
           if record is None]
    _queue_completions(get_config(), [spec for spec, _ in new], [child_id for _, child_id in new])


def cancel_children(job_id: str) -> list[str]:
    """Cancel the unfinished jobs ``job_id`` queued for itself; returns the ids cancelled."""
    from flowcloud.workers.core.celery_app import app

    store = _store()
    now = time.time()
    cancelled = [child_id for child_id in store.children(job_id)
                 if store.write(child_id, {"status": JobStatus.CANCELLED, "finished_at": now})]
    if cancelled:
        app.control.revoke(cancelled)
    return cancelled


def _send(task_name: str, payload: dict, preview: str, model: str | None, flow: str | None,
          job_id: str | None = None) -> str:
    from flowcloud.workers.core.celery_app import app  # Celery costs ~0.2 s; only submitters pay it

    job_id = job_id or str(uuid.uuid4())
    _store().create(JobRecord(job_id=job_id, status=JobStatus.QUEUED, model=model, flow=flow,
                              submitted_at=time.time()))
    _durably(lambda: app.send_task(task_name, args=[payload], task_id=job_id, argsrepr=preview, kwargsrepr="{}"))
    return job_id


def _durably(send: Callable[[], Any]) -> None:
    """Send, then wait for a Sentinel group's replica to hold it (``replica_fence``); send again when the
    primary changed meanwhile: the messages may be gone with it, and a job delivered twice is recorded
    and billed once."""
    send()
    if replica_fence.fence(get_config().broker_url_or_redis()) is replica_fence.Fence.MOVED:
        send()


def _send_jobs(task_name: str, jobs: list[tuple[str, CompletionSpec | EmbeddingSpec]]) -> None:
    """Queue (job id, spec) pairs for ``task_name``: one job as a task of its own, more in bundles
    of ``worker.bundle_size`` jobs per message (flowcloud.tasks.bundle), each with its own record."""
    from flowcloud.workers.core.celery_app import BUNDLE_TASK, app

    size = get_config().worker.bundle_size
    if len(jobs) == 1 or size == 1:
        for job_id, spec in jobs:
            _send(task_name, spec.model_dump(mode="json"), _preview(get_config(), spec), spec.model, spec.flow,
                  job_id=job_id)
        return
    now = time.time()
    _store().create_many([JobRecord(job_id=job_id, status=JobStatus.QUEUED, model=spec.model, flow=spec.flow,
                                    submitted_at=now) for job_id, spec in jobs])

    def send() -> None:
        for start in range(0, len(jobs), size):
            part = jobs[start:start + size]
            app.send_task(BUNDLE_TASK, args=[task_name, [[job_id, spec.model_dump(mode="json")]
                                                         for job_id, spec in part]],
                          argsrepr=f"[{len(part)} jobs] {_preview(get_config(), part[0][1])}, ...", kwargsrepr="{}")

    _durably(send)


def _masked_at_submit(config: Config, specs: list[Spec]) -> list[Spec]:
    """``specs`` as they may enter Redis: masked when ``mask.at_submit`` covers their flow, whatever provider
    will serve them (it is not chosen yet). A failure raises ``MaskingFailed``, and nothing is queued."""
    if config.mask is None or not config.mask.at_submit or not any(config.mask.covers(s.flow) for s in specs):
        return specs
    from flowcloud.workers.core.masking import mask_spec, masker_for  # phonenumbers: ~0.2 s, paid only here

    masker = masker_for(config.mask)
    return [mask_spec(spec, masker)[0] if config.mask.covers(spec.flow) else spec for spec in specs]


def _preview(config: Config, spec: CompletionSpec | EmbeddingSpec | SummarizeSpec) -> str:
    """The job's preview for Flower and the worker's log: of its masked text when masking is configured
    (a prompt masked at submit already is)."""
    if config.mask is None or config.mask.at_submit:
        return spec.preview()
    from flowcloud.workers.core.masking import masked_preview

    return masked_preview(spec, config.mask)


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
    from flowcloud.workers.core.celery_app import app

    store = _store()
    if store.get(job_id) is None:
        raise JobNotFound(job_id)
    cancelled = store.write(job_id, {"status": JobStatus.CANCELLED, "finished_at": time.time()})
    if cancelled:
        app.control.revoke(job_id)
        cancel_children(job_id)  # a summary's chunk jobs stop with it
    return cancelled


def embed(text: str | list[str], model: str | None = None, flow: str | None = None) -> str | list[str]:
    """Queue an embedding of ``text`` (a job id) or of each text in a list (job ids in order).

    The record's ``embedding`` holds the vector. ``model`` must be an embedding
    model (``kind: embedding``); None takes the first one configured. Short texts
    sent at about the same time, by any producer, share one provider call. Every
    text is validated before any is queued (``limits.prompt_chars`` each, ``limits.batch``
    in all).
    """
    from flowcloud.workers.core.celery_app import EMBED_TASK

    config = get_config()
    texts = [text] if isinstance(text, str) else _batch_of(text, "text", "a string or a list of strings")
    limits.check_batch(config, len(texts), [flow])
    model = embedding_model(config, model)
    specs = _within_limits(config, [build_embedding_spec(item, model=model, flow=flow) for item in texts])
    specs = _within_limits(config, _masked_at_submit(config, specs))
    ids = [str(uuid.uuid4()) for _ in specs]
    _send_jobs(EMBED_TASK, list(zip(ids, specs)))
    return ids[0] if isinstance(text, str) else ids
