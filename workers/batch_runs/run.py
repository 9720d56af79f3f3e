"""Document summaries through a provider's Batch API: start a run, advance it, read its results.

``start`` plans every document as a summary is planned (one request for a
document that fits the model's window under ``cheapest``, chunks beyond it)
and sends round 1, all map requests of all documents, as one provider batch.
``advance`` polls the round's batch; once it is done it collects the answers, and the next round
batches together every document's next reduce level and the requests that
failed once (see ``flowcloud.workers.batch_runs.plan``). Each document's ``DocumentSummary``
carries its cost at the provider's ``batch_price_ratio`` (OpenAI: half) and
what the same tokens cost at list price, so a report can show the saving; each
collected round is billed in the tally (``flowcloud costs``) at the batch price,
with its saving (lever ``batch_api``), in the transaction that stores the run.
``advance_open_runs`` advances every run not finished, whoever started it: the
``flowcloud.poll_batches`` task calls it (``flowcloud.tasks.runs``).

A run's state lives in Redis (``flowcloud:batchrun:<id>``), so it survives
restarts; ``advance`` holds a per-run lock, so two Beat ticks never collect or
submit the same round twice. A provider error while polling is kept in
``last_error`` and tried again on the next call when retryable; a permanent one
fails the documents still open. Only prompts go to the provider: no key is
ever stored, in Redis or in a batch file.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from flowcloud.workers.batch_runs.plan import (
    DocumentProgress, PlannedRequest, Prices, next_level, plan_documents, record_answer, retry_or_fail,
)
from flowcloud.workers import metrics, runtime
from flowcloud.workers.core import tally
from flowcloud.workers.core.config import Config, ProviderConfig, SummarizeSettings
from flowcloud.workers.core.errors import InvalidJob, JobNotFound, MalformedResponse, ProviderError
from flowcloud.workers.core.masking import masker_for
from flowcloud.workers.core.money import to_nano
from flowcloud.workers.core.redis_conn import RELEASE_IF_OWNER
from flowcloud.workers.core.summary_plan import reduce_budget
from flowcloud.workers.providers import Usage
from flowcloud.workers.providers.batch_api import BatchAPI, BatchInfo

log = logging.getLogger(__name__)

RUN_KEY = "flowcloud:batchrun:"
LOCK_KEY = "flowcloud:batchrun-lock:"
OPEN_RUNS_KEY = "flowcloud:batchruns:open"
# Longer than one advance can take (an upload, a poll, two downloads); a crashed holder's lock ends here.
LOCK_SECONDS = 600
# An open run outlives the provider's 24 h window with room for a Beat that was down a while.
OPEN_RUN_TTL = 7 * 24 * 3600
METADATA_CHARS = 512


@dataclass(frozen=True)
class BatchDocument:
    """One document of a run: a unique name (it keys the results) and its text."""

    name: str
    text: str


@dataclass(frozen=True)
class DocumentSummary:
    """A finished document: its summary, or the reason it failed (``error``), and what it cost."""

    text: str | None
    usage: dict[str, int]
    cost_usd: float
    list_price_usd: float
    error: str | None = None
    chunks: int = 0  # the document's map requests: 1 when it went whole


@dataclass(frozen=True)
class BatchRunState:
    """Where a run stands: its round, whether it is finished, and every finished document so far."""

    run_id: str
    round: int
    finished: bool
    results: dict[str, DocumentSummary] = field(default_factory=dict)
    documents: int = 0
    batch_id: str | None = None
    batch_status: str | None = None
    last_error: str | None = None

    @property
    def cost_usd(self) -> float:
        return sum(summary.cost_usd for summary in self.results.values())

    @property
    def list_price_usd(self) -> float:
        return sum(summary.list_price_usd for summary in self.results.values())


class StoredRun(BaseModel):
    """A run as kept in Redis between calls."""

    run_id: str
    provider: str
    model: str
    flow: str | None = None
    settings: SummarizeSettings
    prices: Prices
    documents: list[DocumentProgress]
    # The most tokens of summaries one reduce request merges, for the run's model; None in a run
    # stored before it was kept: settings.reduce_tokens.
    reduce_budget: int | None = None
    round: int = 1
    pending: list[PlannedRequest] = Field(default_factory=list)
    input_file_id: str | None = None
    batch_id: str | None = None
    batch_status: str | None = None
    last_error: str | None = None
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None

    def public(self) -> BatchRunState:
        results = {doc.name: summary_of(doc, self.prices) for doc in self.documents if doc.finished}
        return BatchRunState(run_id=self.run_id, round=self.round, finished=self.finished_at is not None,
                             results=results, documents=len(self.documents), batch_id=self.batch_id,
                             batch_status=self.batch_status, last_error=self.last_error)


def summary_of(document: DocumentProgress, prices: Prices) -> DocumentSummary:
    list_price = prices.list_price(document.prompt_tokens, document.completion_tokens)
    usage = {"prompt_tokens": document.prompt_tokens, "completion_tokens": document.completion_tokens}
    return DocumentSummary(text=document.summary, usage=usage, cost_usd=list_price * prices.batch_price_ratio,
                           list_price_usd=list_price, error=document.error, chunks=document.chunks)


# -- the contract


def start(run_id: str, documents: list[BatchDocument], model: str | None, flow: str | None = None) -> None:
    """Plan ``documents`` and send round 1 as one provider batch; a second call with the same id does nothing.

    ``model`` defaults as a summary's does (``summarize.model``, else
    ``default_model``); each document is planned for the model entry its
    requests go to, a group's first deployment. Bad input (no documents, a
    repeated name, a model no provider serves, a provider without a Batch API)
    raises ``InvalidJob`` before anything is stored or sent. Provider errors do
    not raise: see ``advance``.
    """
    _check_documents(documents)
    config = runtime.current().config
    provider, model = runtime.current().router.route(model or config.summarize.model)
    provider.batch_api()  # raises Unsupported, an InvalidJob, for a provider without one
    entry = provider.config.price(model)
    documents = _masked(documents, config, provider.config, flow)
    states, requests = plan_documents([(d.name, d.text) for d in documents], entry, config.summarize)
    run = StoredRun(run_id=run_id, provider=provider.name, model=model, flow=flow, settings=config.summarize,
                    prices=Prices.of(entry, provider.config.batch_price_ratio), documents=states,
                    reduce_budget=reduce_budget(entry, config.summarize), pending=requests)
    chunked = sum(1 for d in states if d.chunks > 1)
    log.info("batch run %s: %d documents planned %s, %d of them in chunks; %d requests in round 1", run_id,
             len(states), config.summarize.strategy.value, chunked, len(requests))
    # Stored before any provider call: a crash leaves a round to send, never a batch nobody knows.
    if not _redis().set(RUN_KEY + run_id, run.model_dump_json(), ex=OPEN_RUN_TTL, nx=True):
        log.info("batch run %s exists already; not starting it again", run_id)
        return
    _redis().sadd(OPEN_RUNS_KEY, run_id)
    with _locked(run_id) as held:
        if held:
            _step(_load(run_id))


def advance(run_id: str) -> BatchRunState:
    """Poll the run's batch once; collect and send the next round when it is done. Safe to call concurrently:
    a call that finds another one advancing the run returns the stored state unchanged."""
    with _locked(run_id) as held:
        run = _load(run_id)
        if held and run.finished_at is None:
            run = _step(run)
        return run.public()


def run_state(run_id: str) -> BatchRunState:
    """The run as last stored, without asking the provider anything."""
    return _load(run_id).public()


def open_runs() -> list[str]:
    """The ids of the runs not finished yet."""
    return sorted(_redis().smembers(OPEN_RUNS_KEY))


def advance_open_runs() -> dict[str, int]:
    """Advance every open run once (``flowcloud.poll_batches`` does, on a worker); returns each one's round.
    One run's failure never stops the others."""
    rounds = {}
    for run_id in open_runs():
        try:
            state = advance(run_id)
        except JobNotFound:
            _redis().srem(OPEN_RUNS_KEY, run_id)  # its state expired: nothing left to advance
            continue
        except Exception:
            log.exception("batch run %s: advancing failed; the next poll tries again", run_id)
            continue
        rounds[run_id] = state.round
    return rounds


def _masked(documents: list[BatchDocument], config: Config, provider: ProviderConfig,
            flow: str | None) -> list[BatchDocument]:
    """The documents as a cloud may see them, masked before the run's state is stored; their summaries
    keep the placeholders (a run outlives any one process, which restoring would need)."""
    if config.mask is None or not provider.cloud or not config.mask.covers(flow):
        return documents
    masker = masker_for(config.mask)
    masked = []
    for document in documents:
        [text], placeholders = masker.mask([document.text])  # MaskingFailed: nothing is stored or sent
        metrics.record_masked(placeholders.counts)
        masked.append(BatchDocument(document.name, text))
    return masked


# -- one step of a run


def _step(run: StoredRun) -> StoredRun:
    """Send a round not sent yet, or poll the sent one and, once it is done, collect and send the next."""
    try:
        if run.pending:
            _poll_or_submit(run, _api_for(run))
        run.last_error = None
    except (ProviderError, InvalidJob) as exc:
        run.last_error = str(exc)
        if not exc.retryable:
            for document in run.documents:
                document.fail(str(exc))
            run.pending = []
        log.warning("batch run %s: %s", run.run_id, exc)
    if not run.pending and run.finished_at is None:
        _finish(run)
    _save(run)
    return run


def _api_for(run: StoredRun) -> BatchAPI:
    if run.provider not in {p.name for p in runtime.current().config.providers}:
        raise InvalidJob(f"provider {run.provider!r} is not configured any more; the run cannot go on")
    return runtime.current().router.provider(run.provider).batch_api()


def _poll_or_submit(run: StoredRun, api: BatchAPI) -> None:
    if run.batch_id is None:
        _submit(run, api)
        return
    batch = api.get(run.batch_id)
    run.batch_status = batch.status
    if not batch.finished:
        return
    collected_files, billed = _collect(run, api, batch)
    _save(run, billed)  # the round is collected (and billed, once) even if sending the next one fails
    _tidy(api, *collected_files)
    if run.pending:
        _submit(run, api)


def _submit(run: StoredRun, api: BatchAPI) -> None:
    if run.input_file_id is None:
        max_tokens = run.settings.summary_tokens
        lines = [api.chat_request(r.custom_id, run.model, [{"role": "user", "content": r.prompt}],
                                  max_tokens=max_tokens) for r in run.pending]
        run.input_file_id = api.upload(lines, filename=f"flowcloud-round{run.round}.jsonl")
        _save(run)
    # Metadata lets a person find the run's batches in the provider's console (values: 512 characters at most).
    metadata = {"flowcloud_run": run.run_id[:METADATA_CHARS], "round": str(run.round)}
    batch = api.create(run.input_file_id, metadata=metadata)
    run.batch_id, run.batch_status = batch.id, batch.status
    log.info("batch run %s: round %d sent as batch %s (%d requests)", run.run_id, run.round, batch.id,
             len(run.pending))


def _collect(run: StoredRun, api: BatchAPI, batch: BatchInfo) -> tuple[list[str | None], Usage]:
    """Apply a finished batch's results to the documents and plan the next round.
    Returns the round's files, which the provider may now delete, and the tokens the round billed."""
    failure = api.batch_failure(batch) if batch.status == "failed" else None
    results = {} if failure else api.results(batch)
    following: list[PlannedRequest] = []
    billed = Usage()
    for request in run.pending:
        document = run.documents[request.doc]
        result = results.get(request.custom_id)
        if result is not None and result.completion is not None:
            usage = result.completion.usage
            billed += usage
            record_answer(document, request, result.completion.text, usage.prompt_tokens, usage.completion_tokens)
            continue
        error = failure or (result.error if result else None) or MalformedResponse(
            f"{api.name}: batch {batch.id} ({batch.status}) has no result for a request", provider=api.name)
        retry = retry_or_fail(document, request, error)
        if retry is not None:
            following.append(retry)
    for doc, document in enumerate(run.documents):
        following += next_level(doc, document, run.reduce_budget or run.settings.reduce_tokens)
    run.pending = [r for r in following if not run.documents[r.doc].finished]
    files = [run.input_file_id, batch.output_file_id, batch.error_file_id]
    if run.pending:
        run.round += 1
    run.input_file_id = run.batch_id = None
    return files, billed


def _finish(run: StoredRun) -> None:
    run.finished_at = time.time()
    _redis().srem(OPEN_RUNS_KEY, run.run_id)
    done = sum(1 for d in run.documents if d.summary is not None)
    log.info("batch run %s finished after %d round(s): %d of %d documents summarized", run.run_id,
             run.round, done, len(run.documents))


def _tidy(api: BatchAPI, *file_ids: str | None) -> None:
    """Delete a collected round's files at the provider; a failure only leaves them there."""
    for file_id in filter(None, file_ids):
        try:
            api.delete_file(file_id)
        except ProviderError as exc:
            log.debug("batch file %s not deleted: %s", file_id, exc)


# -- storage


def _check_documents(documents: list[BatchDocument]) -> None:
    if not documents:
        raise InvalidJob("a batch run needs at least one document")
    if not all(isinstance(d, BatchDocument) and isinstance(d.text, str) for d in documents):
        raise InvalidJob("documents must be BatchDocument(name, text) with text as a string")
    names = [d.name for d in documents]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidJob(f"document names must be unique in a run; repeated: {', '.join(repeated)}")


def _redis():
    return runtime.current().store.client


def _load(run_id: str) -> StoredRun:
    raw = _redis().get(RUN_KEY + run_id)
    if raw is None:
        raise JobNotFound(run_id)
    return StoredRun.model_validate_json(raw)


def _save(run: StoredRun, billed: Usage | None = None) -> None:
    """Store the run; with ``billed`` (a collected round's tokens), tally its cost at the batch price and
    its saving against the list price in the same transaction, so a round is billed exactly once."""
    ttl = runtime.current().config.worker.result_ttl if run.finished_at is not None else OPEN_RUN_TTL
    pipe = _redis().pipeline(transaction=True)
    pipe.set(RUN_KEY + run.run_id, run.model_dump_json(), ex=ttl)
    if billed is not None:
        list_price = run.prices.list_price(billed.prompt_tokens, billed.completion_tokens)
        cost = to_nano(list_price * run.prices.batch_price_ratio)
        tally.bill_in(pipe, run.flow, run.provider, run.model, cost,
                      {tally.Lever.BATCH_API: to_nano(list_price) - cost})
    pipe.execute()


@contextmanager
def _locked(run_id: str) -> Iterator[bool]:
    """Hold the run's lock for the block; yields False (and holds nothing) when another caller has it."""
    token = uuid.uuid4().hex
    held = bool(_redis().set(LOCK_KEY + run_id, token, nx=True, ex=LOCK_SECONDS))
    try:
        yield held
    finally:
        if held:
            _redis().eval(RELEASE_IF_OWNER, 1, LOCK_KEY + run_id, token)
