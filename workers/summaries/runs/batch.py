"""A run in ``batch_api`` mode: every document goes out in provider batches, results come back later.

``flowcloud.workers.batch_runs.run`` owns the provider side (JSONL files, batches, the rounds of
map and reduce); this module hands it the documents and turns its results into
the same summary files and report as ``tasks`` mode. While a batch run is
open, its ``RunState.in_flight`` is keyed by document name, not job id.

Only workers hold provider keys, so only they talk to the provider. A scheduled
run does everything on the worker (``start_batch``, ``write_stored_results``). The
CLI sends its documents to a worker (``start_on_workers``), asks the workers
to advance open batches, and reads the results from Redis (``collect_batch``),
so it reads and writes the files where it runs. Either way the provider is
polled by one task, ``flowcloud.poll_batches``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcloud.workers.summaries.runs.documents import Document, load_text
from flowcloud.workers.summaries.runs.engine import RunState, save_summary
from flowcloud.workers.summaries.runs.report import DocumentResult, Outcome
from flowcloud.workers.core.errors import InvalidJob, JobNotFound

if TYPE_CHECKING:
    from flowcloud.workers.batch_runs.run import BatchRunState

# How long the CLI waits for a worker to take its documents to the provider.
START_TIMEOUT_SECONDS = 120.0


def take_documents(state: RunState) -> list[dict[str, str]]:
    """Move the pending documents in flight, read; returns ``{name, text}`` for each one that could be read."""
    documents = []
    for document in state.pending:
        try:
            text, digest = load_text(document.path)
        except InvalidJob as exc:
            state.results.append(_failed(document, str(exc)))
            continue
        state.in_flight[document.name] = document.model_copy(update={"sha256": digest, "chars": len(text)})
        documents.append({"name": document.name, "text": text})
    state.pending = []
    return documents


def start_batch(state: RunState) -> None:
    """On a worker: send every pending document to the provider as one Batch API run."""
    documents = take_documents(state)
    if documents:
        fail_all(state, start_provider_batch(state.run_id, documents, state.spec.model, state.spec.flow))


def start_provider_batch(run_id: str, documents: list[dict[str, str]], model: str | None,
                         flow: str | None) -> str | None:
    """On a worker: ``flowcloud.workers.batch_runs.run.start``; returns why it refused (a provider without a Batch API), or None."""
    from flowcloud.workers.batch_runs import run as batch_api

    try:
        batch_api.start(run_id, [batch_api.BatchDocument(**d) for d in documents], model=model, flow=flow)
    except InvalidJob as exc:
        return str(exc)
    return None


def write_stored_results(state: RunState) -> list[DocumentResult]:
    """Write the summaries the run's provider batch has brought back so far; ``JobNotFound`` when its
    state has expired."""
    from flowcloud.workers.batch_runs import run as batch_api

    if not state.in_flight:
        return []
    return apply_results(state, batch_api.run_state(state.run_id))


def start_on_workers(state: RunState) -> list[DocumentResult]:
    """From the CLI: hand the pending documents to a worker, which starts the provider batch.

    Returns the documents that failed: unreadable ones, or all of them when
    the worker refused the run or none answered in time.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    from flowcloud.workers.core.celery_app import START_BATCH_RUN_TASK, app

    before = len(state.results)
    documents = take_documents(state)
    if documents:
        # The texts travel in the message; Flower shows this line instead of them.
        sent = app.send_task(START_BATCH_RUN_TASK, args=[state.run_id, documents, state.spec.model, state.spec.flow],
                             argsrepr=f"batch run {state.run_id}: {len(documents)} documents", kwargsrepr="{}")
        try:
            error = sent.get(timeout=START_TIMEOUT_SECONDS)
        except CeleryTimeout:
            error = f"no worker took the run within {START_TIMEOUT_SECONDS:g} s; is `flowcloud worker` running?"
        finally:
            sent.forget()
        fail_all(state, error)
    return state.results[before:]


def collect_batch(state: RunState) -> list[DocumentResult]:
    """From the CLI: ask the workers to advance open batches, then write whatever results are stored."""
    from flowcloud.workers.core.celery_app import POLL_BATCHES_TASK, app

    app.send_task(POLL_BATCHES_TASK)
    try:
        return write_stored_results(state)
    except JobNotFound:
        return []


def apply_results(state: RunState, batch: BatchRunState) -> list[DocumentResult]:
    """Write the summaries in ``batch`` not written yet; returns the documents finished."""
    finished = []
    for name, summary in batch.results.items():
        document = state.in_flight.pop(name, None)
        if document is None:
            continue  # written by an earlier poll
        if summary.error:
            result = _failed(document, summary.error)
        else:
            usage = summary.usage or {}
            result = save_summary(state, document, summary.text or "", job_id=None,
                                  tokens_in=usage.get("prompt_tokens", 0), tokens_out=usage.get("completion_tokens", 0),
                                  cost_usd=summary.cost_usd, list_price_usd=summary.list_price_usd,
                                  chunks=summary.chunks or None,
                                  extra={"model": state.spec.model, "mode": "batch_api"})
        state.results.append(result)
        finished.append(result)
    if batch.finished:
        finished += fail_all(state, "the provider batch ended without a result for it")
    return finished


def fail_all(state: RunState, reason: str | None) -> list[DocumentResult]:
    """Fail every document in flight with ``reason`` (nothing when None)."""
    if not reason:
        return []
    failed = [_failed(state.in_flight.pop(name), reason) for name in list(state.in_flight)]
    state.results += failed
    return failed


def _failed(document: Document, reason: str) -> DocumentResult:
    return DocumentResult(name=document.name, source=document.path, outcome=Outcome.FAILED,
                          sha256=document.sha256, reason=reason)
