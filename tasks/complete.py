"""The ``complete`` task: one chat completion, retried with care, finished with one record write.

The task never sleeps: a provider's Retry-After or our backoff becomes a Celery
countdown, so a waiting job frees its worker slot for other jobs. A job that
already finished (a redelivery after a lost worker, a cancelled job) returns at
once without calling the provider.
"""

from __future__ import annotations

import logging
import time

from tasks.cache import cache_key
from tasks.jobspec import CompletionSpec, parse_spec
from tasks.records import JobStatus
from workers import runtime
from workers.celery_app import COMPLETE_TASK, app
from workers.config import get_config
from workers.errors import InvalidJob, ProviderError
from workers.providers import Completion, Provider
from workers.retry import countdown_hop, retry_delay

log = logging.getLogger(__name__)
# How often a job coalesced behind an identical one looks for its answer.
COALESCED_WAIT_SECONDS = 0.25
# A flight outlives one provider call by this much before another job may take it over.
FLIGHT_MARGIN_SECONDS = 5.0


@app.task(name=COMPLETE_TASK, bind=True, ignore_result=True, max_retries=None,
          throws=(ProviderError, InvalidJob))  # expected failures: logged in one line, no traceback
def complete(self, request: dict, attempt: int = 1, not_before: float | None = None) -> None:
    job_id = self.request.id
    if not_before is not None and not_before > time.time():
        # The rest of a wait longer than one countdown may safely last.
        schedule_attempt(self, request, attempt, not_before, exc=None)
    store = runtime.job_store()
    if not store.start(job_id, attempts=attempt, worker=self.request.hostname):
        log.info("job %s already finished or was cancelled; not calling the provider again", job_id)
        return
    try:
        spec = parse_spec(request)
        provider, model = runtime.router().route(spec.model)
    except InvalidJob as exc:
        store.fail(job_id, exc, attempts=attempt, model=request.get("model"))
        raise
    finished, flight = answer_or_take_flight(self, request, spec, provider, model, attempt)
    if finished:
        return
    try:
        completion = provider.chat([m.model_dump() for m in spec.messages], model, **spec.provider_params())
    except ProviderError as exc:
        if flight:
            runtime.answer_cache().land(flight, job_id)
        handle_provider_error(self, request, exc, attempt, model)
        raise
    succeed(job_id, spec, provider, model, completion, attempt, flight)


def answer_or_take_flight(
    task, request: dict, spec: CompletionSpec, provider: Provider, model: str, attempt: int
) -> tuple[bool, str | None]:
    """Finish from the cache, wait for an identical job in flight, or lead the call.

    Returns (finished, the cache key whose flight this job now owns, if any);
    waiting raises Celery's Retry: a countdown, not a held slot, and no attempt spent.
    """
    cache = runtime.answer_cache()
    if cache is None or not spec.cache:
        return False, None
    key = cache_key(spec, model)
    call_seconds = provider.config.timeout.connect + provider.config.timeout.read
    answer, leads = cache.lookup_or_lead(key, task.request.id, flight_ttl=call_seconds + FLIGHT_MARGIN_SECONDS)
    if answer is not None:  # an identical job finished while this one was queued
        runtime.job_store().succeed(task.request.id, **answer, flow=spec.flow, cached=True, cost_usd=0.0,
                                    attempts=attempt - 1)
        return True, None
    if leads:
        return False, key
    runtime.job_store().write(task.request.id, {"status": JobStatus.QUEUED,
                                                "next_attempt_at": time.time() + COALESCED_WAIT_SECONDS})
    schedule_attempt(task, request, attempt, time.time() + COALESCED_WAIT_SECONDS, exc=None)
    raise AssertionError("schedule_attempt raises Celery's Retry")


def succeed(
    job_id: str, spec: CompletionSpec, provider: Provider, model: str, completion: Completion, attempt: int,
    flight: str | None,
) -> None:
    # Priced and recorded under the configured name: providers often answer with a dated variant.
    answer = {"text": completion.text, "provider": provider.name, "model": model,
              "usage": completion.usage.as_dict()}
    runtime.job_store().succeed(job_id, **answer, flow=spec.flow, attempts=attempt,
                                cost_usd=provider.cost(model, completion.usage))
    if flight:
        runtime.answer_cache().store_and_land(flight, answer, job_id)


def handle_provider_error(task, request: dict, error: ProviderError, attempt: int, model: str) -> None:
    """Schedule the next attempt (raising Celery's Retry) or record the failure and return."""
    config = get_config()
    delay = retry_delay(error, attempt, config.retry)
    if delay is None:
        log.warning("job %s failed on attempt %d: %s", task.request.id, attempt, error)
        runtime.job_store().fail(task.request.id, error, attempts=attempt, provider=error.provider, model=model)
        return
    log.info("job %s: %s; attempt %d in %.2f s", task.request.id, error.kind, attempt + 1, delay)
    not_before = time.time() + delay
    runtime.job_store().write(task.request.id, {
        "status": JobStatus.RETRYING, "attempts": attempt,
        "error": error.to_record(), "next_attempt_at": not_before,
    })
    schedule_attempt(task, request, attempt + 1, not_before, exc=error)


def schedule_attempt(task, request: dict, attempt: int, not_before: float, exc: Exception | None) -> None:
    countdown = countdown_hop(not_before - time.time(), get_config().worker.visibility_timeout)
    raise task.retry(
        args=[request],
        kwargs={"attempt": attempt, "not_before": not_before},
        countdown=max(countdown, 0.0),
        exc=exc,
        argsrepr=parse_spec(request).preview(),
        kwargsrepr=f"{{'attempt': {attempt}}}",
    )
