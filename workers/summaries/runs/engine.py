"""A run in ``tasks`` mode: plan it, then advance it step by step until every document is finished.

``plan_run`` finds the documents and decides, from the output folder, which are
done already. ``advance`` is one short step that never waits: it collects the
summaries that finished (writing each output at once) and submits more
documents, never holding more than ``max_in_flight`` summarize jobs, so ten
thousand documents do not become ten thousand queued jobs at once. The CLI calls
it in a loop between short waits; the scheduled run calls it once per hop of a
Celery task. A ``RunState`` is plain data, so the hops keep it in Redis between
steps (``flowcloud.workers.summaries.runs.store``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from flowcloud.workers.core.jobspec import check_model
from flowcloud.workers.summaries.runs.documents import DEFAULT_EXTENSIONS, Document, find_documents, load_text
from flowcloud.workers.summaries.runs.outputs import OutputDir
from flowcloud.workers.summaries.runs.report import DocumentResult, Outcome, RunReport, RunStatus, build_report
from flowcloud.workers.core.config import get_config
from flowcloud.workers.core.errors import InvalidJob, JobNotFound
from flowcloud.workers.core.records import FINISHED_STATUSES, JobStatus

DEFAULT_MAX_IN_FLIGHT = 16


class RunSpec(BaseModel):
    """What to summarize, where to, and how."""

    name: str = Field("summarize", description="the schedule's name, or 'summarize' for a CLI run")
    sources: list[str] = Field(min_length=1)
    output: Path
    model: str | None = None
    flow: str | None = Field(None, max_length=200)
    mode: Literal["tasks", "batch_api"] = "tasks"
    mode_reason: str | None = Field(None, description="why the run goes this way (a schedule's mode: auto's choice)")
    max_in_flight: int = Field(DEFAULT_MAX_IN_FLIGHT, ge=1, le=10_000)
    cache: bool = True
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))


class RunState(BaseModel):
    """Everything a run needs to continue: documents still to send, jobs in flight, results so far."""

    run_id: str
    spec: RunSpec
    started_at: float
    documents: int
    pending: list[Document] = Field(default_factory=list)
    in_flight: dict[str, Document] = Field(default_factory=dict)  # job id -> document
    progress: dict[str, dict[str, int]] = Field(default_factory=dict)  # job id -> chunks_done, chunks_total
    results: list[DocumentResult] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.pending and not self.in_flight

    @property
    def output(self) -> OutputDir:
        return OutputDir(self.spec.output)


def plan_run(spec: RunSpec, run_id: str | None = None) -> RunState:
    """The run's starting state: unreadable documents failed, finished ones skipped, the rest pending.

    Raises ``InvalidJob`` for a model no provider serves or a source that names
    nothing, before any job is submitted.
    """
    if spec.model is not None:
        check_model(get_config(), spec.model, "chat")
    documents = find_documents(spec.sources, spec.extensions, exclude=spec.output)
    if documents:
        OutputDir(spec.output).prepare()
    state = RunState(run_id=run_id or uuid.uuid4().hex, spec=spec, started_at=time.time(),
                     documents=len(documents))
    done = state.output.finished()
    first_with_hash: dict[str, str] = {}
    for document in documents:
        if document.error:
            state.results.append(_result(document, Outcome.FAILED, reason=document.error))
        elif document.sha256 in done:
            state.results.append(_result(document, Outcome.SKIPPED, output=done[document.sha256],
                                         reason="already summarized"))
        elif document.sha256 in first_with_hash:
            state.results.append(_result(document, Outcome.SKIPPED,
                                         reason=f"same content as {first_with_hash[document.sha256]}"))
        else:
            first_with_hash[document.sha256] = document.name
            state.pending.append(document)
    return state


def advance(state: RunState) -> list[DocumentResult]:
    """One step: collect finished summaries (outputs written), then top up the jobs in flight.

    Returns the documents that finished in this step. Never waits for a job.
    """
    finished = collect(state)
    finished += submit_more(state)
    return finished


def collect(state: RunState) -> list[DocumentResult]:
    """Write the outputs of the jobs that finished; note the chunk progress of the others."""
    from flowcloud.workers.core import jobs

    finished = []
    for job_id, document in list(state.in_flight.items()):
        try:
            record = jobs.status(job_id)
        except JobNotFound:
            record = {"status": JobStatus.FAILED.value,
                      "error": {"kind": "lost", "message": "the job's record has expired"}}
        if record["status"] in FINISHED_STATUSES:
            del state.in_flight[job_id]
            state.progress.pop(job_id, None)
            finished.append(finish_document(state, document, job_id, record))
        elif record.get("progress"):
            state.progress[job_id] = record["progress"]
    return finished


def submit_more(state: RunState) -> list[DocumentResult]:
    """Submit pending documents until ``max_in_flight`` are in flight; returns those that failed at once."""
    from flowcloud.workers.core import jobs

    failed = []
    while state.pending and len(state.in_flight) < state.spec.max_in_flight:
        document = state.pending.pop(0)
        try:
            # Read again: the text sent is the text whose hash goes into the output.
            text, digest = load_text(document.path)
            job_id = jobs.summarize(text, model=state.spec.model, flow=state.spec.flow, cache=state.spec.cache)
        except InvalidJob as exc:
            failed.append(_result(document, Outcome.FAILED, reason=str(exc)))
            continue
        state.in_flight[job_id] = document.model_copy(update={"sha256": digest, "chars": len(text)})
    state.results += failed
    return failed


def finish_document(state: RunState, document: Document, job_id: str, record: dict[str, Any]) -> DocumentResult:
    """Turn a finished summarize record into the document's output file and result."""
    if record["status"] != JobStatus.SUCCEEDED:
        error = record.get("error") or {}
        reason = f"{error.get('kind', record['status'])}: {error.get('message', '')}".rstrip(": ")
        result = _result(document, Outcome.FAILED, reason=reason, job_id=job_id)
    else:
        usage = record.get("usage") or {}
        progress = record.get("progress") or {}
        result = save_summary(state, document, record.get("text") or "", job_id=job_id,
                              tokens_in=usage.get("prompt_tokens", 0), tokens_out=usage.get("completion_tokens", 0),
                              cost_usd=record.get("cost_usd", 0.0), list_price_usd=record.get("cost_usd", 0.0),
                              chunks=progress.get("chunks_total"),
                              extra={"model": record.get("model"), "provider": record.get("provider"),
                                     "cached": record.get("cached", False), "depth": progress.get("depth")})
    state.results.append(result)
    return result


def save_summary(state: RunState, document: Document, text: str, *, job_id: str | None, tokens_in: int,
                 tokens_out: int, cost_usd: float, list_price_usd: float, chunks: int | None = None,
                 extra: dict[str, Any] | None = None) -> DocumentResult:
    """Write one summary file (the document's mark of being done) and return its result; not appended."""
    metadata = {"document": document.name, "source": document.path, "sha256": document.sha256,
                "chars": document.chars, "run_id": state.run_id, "job_id": job_id, **(extra or {}),
                "chunks": chunks, "tokens_in": tokens_in, "tokens_out": tokens_out, "cost_usd": round(cost_usd, 9),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = state.output.write_summary(document.name, text, metadata)
    return _result(document, Outcome.DONE, output=path.relative_to(state.spec.output).as_posix(), job_id=job_id,
                   tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd, list_price_usd=list_price_usd,
                   chunks=chunks)


def cancel_in_flight(state: RunState) -> int:
    """Cancel the jobs still in flight (a stopped run); their documents stay undone for the next run."""
    from flowcloud.workers.core import jobs

    cancelled = 0
    for job_id in list(state.in_flight):
        try:
            cancelled += jobs.cancel(job_id)
        except JobNotFound:
            pass
        state.pending.insert(0, state.in_flight.pop(job_id))
    state.progress.clear()
    return cancelled


def chunk_progress(state: RunState) -> tuple[int, int]:
    """Chunks summarized and known in total over the documents in flight."""
    done = sum(p.get("chunks_done", 0) for p in state.progress.values())
    return done, sum(p.get("chunks_total", 0) for p in state.progress.values())


def run_report(state: RunState, status: RunStatus) -> RunReport:
    finished_at = None if status == RunStatus.RUNNING else time.time()
    return build_report(run_id=state.run_id, name=state.spec.name, status=status,
                        spec=state.spec.model_dump(mode="json"), started_at=state.started_at,
                        results=state.results, documents=state.documents, finished_at=finished_at)


def write_report(state: RunState, status: RunStatus) -> RunReport:
    """Build the report and write it to ``run-report.json`` in the output folder."""
    report = run_report(state, status)
    state.output.write_report(report.as_dict())
    return report


def _result(document: Document, outcome: Outcome, **fields: Any) -> DocumentResult:
    return DocumentResult(name=document.name, source=document.path, outcome=outcome, sha256=document.sha256,
                          **fields)
