"""The ``complete`` and ``embed`` tasks: one provider call per job (or one share of a batched
call), retried with care, finished with one record write.

The task never sleeps for a retry: a provider's Retry-After or our backoff
becomes a Celery countdown, so a waiting job frees its worker slot for other
jobs. (A short prompt may wait up to ``batching.max_wait_ms`` for others to join
its batched call: the slot it would hold for its own call anyway.) A job that
already finished (a redelivery after a lost worker, a cancelled job) returns at
once without calling the provider.

Around the call, a job under a budget reserves its worst-case cost first and
settles the real cost after (``flowcloud.workers.budget``): refused, it fails at once with
``budget_exceeded``; degraded, it runs on the budget's cheaper model.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal

from flowcloud.workers.lanes import lane as batching
from flowcloud.tasks.attempt import Attempt
from flowcloud.workers.lanes.lane import Answer
from flowcloud.workers.core.cache import cache_key
from flowcloud.workers.core.chunking import estimate_tokens
from flowcloud.workers.core.jobspec import CompletionSpec, EmbeddingSpec, check_model, parse_embedding_spec, parse_spec
from flowcloud.workers.core.records import JobStatus, running, succeeded
from flowcloud.workers import runtime
from flowcloud.workers.core.celery_app import COMPLETE_TASK, EMBED_TASK, app
from flowcloud.workers.core.config import get_config
from flowcloud.workers.budget import Hold
from flowcloud.workers.core.errors import BudgetExceeded, InvalidJob, ProviderError
from flowcloud.workers.providers import Provider
from flowcloud.workers.core.redis_conn import replies_of
from flowcloud.workers.core.retry import retry_delay

if TYPE_CHECKING:
    from redis.client import Pipeline

log = logging.getLogger(__name__)
# How often a job coalesced behind an identical one looks for its answer.
COALESCED_WAIT_SECONDS = 0.25
# A flight outlives one provider call by this much before another job may take it over.
FLIGHT_MARGIN_SECONDS = 5.0
# What a chat API adds to each message's text (role, separators), so a reservation errs high.
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(frozen=True)
class Job:
    """A started job: what it asks, who answers it, and the cache key whose call it leads, if any."""

    spec: CompletionSpec | EmbeddingSpec
    provider: Provider
    model: str
    flight: str | None = None


@app.task(name=COMPLETE_TASK, bind=True, ignore_result=True, max_retries=None,
          throws=(ProviderError, InvalidJob, BudgetExceeded))  # expected failures: one log line, no traceback
def complete(self, request: dict, attempt: int = 1, not_before: float | None = None) -> None:
    run_completion(Attempt(self, attempt), request, not_before)


@app.task(name=EMBED_TASK, bind=True, ignore_result=True, max_retries=None,
          throws=(ProviderError, InvalidJob, BudgetExceeded))
def embed(self, request: dict, attempt: int = 1, not_before: float | None = None) -> None:
    run_embedding(Attempt(self, attempt), request, not_before)


def run_completion(attempt: Attempt, request: dict, not_before: float | None = None) -> None:
    job = start_job(attempt, request, not_before, parse_spec, "chat")
    if job is not None:
        complete_started(attempt, request, job)


def complete_started(attempt: Attempt, request: dict, job: Job) -> None:
    """A started completion, from its budget on: the call, its retries, its result."""
    call = prepare_call(attempt, job)
    finish_call(attempt, request, call, functools.partial(ask, call, attempt.job_id))


@dataclass(frozen=True)
class Call:
    """A completion ready for its provider: what it sends where, its budget reservation, its flight
    (the cache key whose call it leads) and, when it batches, its lane."""

    spec: CompletionSpec
    provider: Provider
    model: str
    flight: str | None
    hold: Hold
    lane: batching.Lane | None

    @property
    def prompt(self) -> str:
        """What a lane carries: a batched job is one user message."""
        return self.spec.messages[0].content


def prepare_call(attempt: Attempt, job: Job) -> Call:
    """Reserve the job's budget (it may run degraded, on a cheaper model) and find its lane."""
    spec, provider, model, flight = job.spec, job.provider, job.model, job.flight
    prompt_tokens = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in spec.messages)
    hold = hold_budget(attempt, spec.flow, model, flight, prompt_tokens, spec.max_tokens)
    if hold.model != model:  # degraded: its answer must not be cached as the asked model's
        if flight:
            runtime.answer_cache().land(flight, attempt.job_id)
            flight = None
        provider, model = runtime.router().route(hold.model)
    if hold.active and spec.max_tokens is None:  # the bound its reservation assumed
        spec = spec.model_copy(update={"max_tokens": hold.max_tokens})
    return Call(spec, provider, model, flight, hold, batching.chat_lane(spec, provider, model, get_config()))


def ask(call: Call, job_id: str) -> Answer | None:
    """The provider's answer for one job: its own call, or its share of a batched one."""
    if call.lane is None:
        completion = call.provider.chat([m.model_dump() for m in call.spec.messages], call.model,
                                        **call.spec.provider_params())
        return Answer(completion.text, completion.usage)
    return batching.answer(call.lane, job_id, call.prompt)


def finish_call(attempt: Attempt, request: dict, call: Call, answer_of: Callable[[], Answer | None]) -> None:
    """Get the job's answer from ``answer_of`` and record it, or handle the ``ProviderError`` it raises."""
    try:
        answer = answer_of()
    except ProviderError as exc:
        if call.flight:
            runtime.answer_cache().land(call.flight, attempt.job_id)
        handle_provider_error(attempt, request, exc, call.model)  # a retry keeps the reservation
        call.hold.release()
        raise
    if answer is None:  # cancelled while it waited for its batch
        if call.flight:
            runtime.answer_cache().land(call.flight, attempt.job_id)
        call.hold.release()
        return
    succeed(attempt, call.spec, call.provider, call.model, answer, call.flight, call.hold)


def run_embedding(attempt: Attempt, request: dict, not_before: float | None = None) -> None:
    job = start_job(attempt, request, not_before, parse_embedding_spec, "embedding")
    if job is not None:
        embed_started(attempt, request, job)


def embed_started(attempt: Attempt, request: dict, job: Job) -> None:
    """A started embedding, from its budget on."""
    spec, provider, model = job.spec, job.provider, job.model
    # An embedding produces no tokens, and no chat model can stand in for it.
    hold = hold_budget(attempt, spec.flow, model, None, estimate_tokens(spec.input), 0, may_degrade=False)
    lane = batching.embedding_lane(spec.input, provider, model, get_config())
    try:
        answer = batching.answer(lane, attempt.job_id, spec.input)
    except ProviderError as exc:
        handle_provider_error(attempt, request, exc, model)
        hold.release()
        raise
    if answer is None:
        hold.release()
    else:
        succeed(attempt, spec, provider, model, answer, None, hold, field="embedding")


def start_job(
    attempt: Attempt, request: dict, not_before: float | None,
    parse: Callable[[dict], CompletionSpec | EmbeddingSpec], kind: Literal["chat", "embedding"],
) -> Job | None:
    """Read the job's request and mark it running; None if it must not call the provider.

    A request that cannot run fails its job here and raises ``InvalidJob``. For
    a completion that may use the cache, the same round trip that marks it running
    looks up its answer and bids to lead its call (``use_flight``).
    """
    if not_before is not None and not_before > time.time():
        attempt.again(request, attempt.number, not_before, exc=None)  # the rest of a long wait
    pipe = runtime.job_store().client.pipeline(transaction=False)
    started = queue_start(pipe, attempt, request, parse, kind)
    return started(replies_of(pipe))


def queue_start(
    pipe: Pipeline, attempt: Attempt, request: dict,
    parse: Callable[[dict], CompletionSpec | EmbeddingSpec], kind: Literal["chat", "embedding"],
) -> Callable[[Iterator[Any]], Job | None]:
    """``start_job``'s writes, queued on ``pipe`` so many jobs can start in one round trip.

    Returns what finishes the start from the pipeline's replies (``replies_of``):
    the started job, or None. A request that cannot run is failed here, queues
    nothing and raises ``InvalidJob``.
    """
    job_id = attempt.job_id
    store = runtime.job_store()
    try:
        spec = parse(request)
        provider, model = runtime.router().route(spec.model)
        check_model(get_config(), model, kind)
    except InvalidJob as exc:
        store.fail(job_id, exc, attempts=attempt.number, model=request.get("model"))
        raise
    cache = runtime.answer_cache() if isinstance(spec, CompletionSpec) and spec.cache else None
    key = cache_key(spec, model) if cache else None
    read_start = store.write_in(pipe, job_id, running({"attempts": attempt.number, "worker": attempt.worker}))
    read_flight = None
    if cache:
        read_flight = cache.lookup_or_lead_in(pipe, key, job_id, flight_ttl=provider.call_seconds + FLIGHT_MARGIN_SECONDS)

    def started(replies: Iterator[Any]) -> Job | None:
        running_now = read_start(replies)
        answer, leads = read_flight(replies) if read_flight else (None, False)
        if not running_now:
            if leads:
                cache.land(key, job_id)
            log.info("job %s already finished or was cancelled; not calling the provider again", job_id)
            ledger = runtime.budgets()
            if ledger is not None:  # a job cancelled while it waited for a retry still held its reservation
                ledger.finish(job_id, 0.0, "released")
            return None
        job = Job(spec, provider, model, key if leads else None)
        if cache and not leads:
            use_flight(attempt, request, job, answer)
            return None
        return job

    return started


def use_flight(attempt: Attempt, request: dict, job: Job, answer: dict | None) -> None:
    """A job that does not lead its call: finish it with the cached answer, or wait (as a
    countdown, not a held slot, and no attempt spent) for the identical job in flight."""
    if answer is not None:  # an identical job finished while this one was queued
        runtime.job_store().succeed(attempt.job_id, **answer, flow=job.spec.flow, cached=True, cost_usd=0.0,
                                    attempts=attempt.number - 1)
        return
    not_before = time.time() + COALESCED_WAIT_SECONDS
    runtime.job_store().write(attempt.job_id, {"status": JobStatus.QUEUED, "next_attempt_at": not_before})
    attempt.again(request, attempt.number, not_before, exc=None)


def hold_budget(
    attempt: Attempt, flow: str | None, model: str, flight: str | None, prompt_tokens: int,
    output_tokens: int | None, may_degrade: bool = True,
) -> Hold:
    """Reserve the job's worst-case cost on the budgets covering it (no Redis when none do).

    A refused job is failed here (its flight landed, so identical jobs stop waiting for it)
    and ``BudgetExceeded`` is raised.
    """
    ledger = runtime.budgets()
    if ledger is None:
        return Hold(attempt.job_id, model)
    try:
        return ledger.reserve(attempt.job_id, flow, model, prompt_tokens, output_tokens, may_degrade)
    except BudgetExceeded as exc:
        if flight:
            runtime.answer_cache().land(flight, attempt.job_id)
        log.warning("job %s refused: %s", attempt.job_id, exc)
        runtime.job_store().fail(attempt.job_id, exc, attempts=attempt.number, model=model)
        raise


def succeed(
    attempt: Attempt, spec: CompletionSpec | EmbeddingSpec, provider: Provider, model: str, answer: Answer,
    flight: str | None, hold: Hold, field: Literal["text", "embedding"] = "text",
) -> None:
    # Priced and recorded under the configured name: providers often answer with a dated variant.
    result = {field: answer.value, "provider": provider.name, "model": model, "usage": answer.usage.as_dict()}
    extra = {} if answer.batch_size is None else {"batch_size": answer.batch_size}
    cost = provider.cost(model, answer.usage)
    # Settled before the record: a job that dies in between is redelivered, reserves and calls
    # again (a real second cost); the other order would leave its reservation held for good.
    hold.settle(cost)
    store = runtime.job_store()
    # The record and the cache in one round trip; the record first, so a twin woken by the
    # landing finds this job finished.
    pipe = store.client.pipeline(transaction=False)
    readers = [store.write_in(pipe, attempt.job_id, succeeded({**result, **extra, "flow": spec.flow,
                                                              "attempts": attempt.number, "cost_usd": cost}))]
    if flight:
        readers.append(runtime.answer_cache().store_and_land_in(pipe, flight, result, attempt.job_id))
    replies = replies_of(pipe)
    for read in readers:
        read(replies)


def handle_provider_error(attempt: Attempt, request: dict, error: ProviderError, model: str) -> None:
    """Schedule the next attempt (raising Celery's Retry) or record the failure and return."""
    delay = retry_delay(error, attempt.number, get_config().retry)
    if delay is None:
        log.warning("job %s failed on attempt %d: %s", attempt.job_id, attempt.number, error)
        runtime.job_store().fail(attempt.job_id, error, attempts=attempt.number, provider=error.provider,
                                 model=model)
        return
    log.info("job %s: %s; attempt %d in %.2f s", attempt.job_id, error.kind, attempt.number + 1, delay)
    not_before = time.time() + delay
    runtime.job_store().write(attempt.job_id, {
        "status": JobStatus.RETRYING, "attempts": attempt.number,
        "error": error.to_record(), "next_attempt_at": not_before,
    })
    attempt.again(request, attempt.number + 1, not_before, exc=error)
