"""Batch aggregation: short prompts from independent jobs answered by one provider call.

A *lane* is what jobs must share to share a call: provider, model, endpoint
and generation parameters. Three endpoints batch: legacy completions (a list of
prompts), embeddings (a list of inputs) and, opt-in per model, packed chat
(several prompts in one chat request, ``flowcloud.workers.lanes.packing``). Jobs meet in their
lane: first among the jobs of their own worker process, where a full batch
needs no Redis at all (``flowcloud.workers.lanes.local``), then in the lane's Redis list,
where the jobs of every process meet (``flowcloud.workers.lanes.queue``). The call's result
is split into one outcome per job, and each job finishes itself in its own task:

- an answer: the job's text or vector, its share of the usage and the batch size;
- a retryable error of the whole call: the job's own retry (its attempt count,
  the provider's Retry-After, a countdown);
- a permanent error of a call for several jobs, or a packed reply that does
  not parse: every job is sent alone, so one bad prompt fails only its own job.

Models that do not batch never reach this module: their jobs make no extra
Redis round trip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal

from flowcloud.workers.lanes.queue import ALONE, BatchQueue, Entry, Window
from flowcloud.workers.core.chunking import estimate_tokens
from flowcloud.workers.lanes.local import LocalLanes
from flowcloud.workers.core.jobspec import CompletionSpec
from flowcloud.workers.lanes.packing import packed_messages, unpack_reply
from flowcloud.workers.core import errors
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.records import JobStore
from flowcloud.workers.core.errors import ProviderError
from flowcloud.workers.providers import Provider, Usage

log = logging.getLogger(__name__)

# Parameters that cannot be shared by the jobs of one call: several choices per prompt, a reply
# format, and for packed chat anything that would cut or bound the one reply holding every answer.
UNBATCHABLE = {
    "completions": frozenset({"n", "response_format"}),
    "pack": frozenset({"n", "response_format", "stop", "max_tokens"}),
}
FINISHED = {"kind": "finished"}


@dataclass(frozen=True)
class Answer:
    """One job's result: a text or a vector, its tokens, and how many jobs shared the call."""

    value: Any
    usage: Usage
    batch_size: int | None = None
    finish_reason: str | None = None  # a call of its own: why the model stopped ("length": cut off)


@dataclass(frozen=True)
class Lane:
    """Jobs that may share one provider call."""

    endpoint: Literal["completions", "pack", "embeddings"]
    provider: Provider
    model: str
    params: dict[str, Any]
    batched: bool
    max_size: int
    flush_ms: int
    max_wait_ms: int

    def window(self) -> Window:
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]
        return Window(f"{self.provider.name}:{self.model}:{self.endpoint}:{digest}", self.max_size,
                      self.flush_ms, self.provider.call_seconds, self.max_wait_ms)


def chat_lane(spec: CompletionSpec, provider: Provider, model: str, config: Config) -> Lane | None:
    """The lane of a completion job, or None when it takes the ordinary chat path."""
    entry = config.model(model)
    endpoint = entry.batch if entry else "none"
    if endpoint == "none" or not config.batching.enabled:
        return None
    if len(spec.messages) != 1 or spec.messages[0].role != "user":
        return None  # a conversation has no place in a list of prompts
    params = spec.provider_params()
    if UNBATCHABLE[endpoint] & set(params):
        return None
    if estimate_tokens(spec.messages[0].content) > config.batching.max_prompt_tokens:
        return None
    return Lane(endpoint, provider, model, params, True, config.batch_size(model), config.batching.flush_ms,
                config.batching.max_wait_ms)


def embedding_lane(text: str, provider: Provider, model: str, config: Config) -> Lane:
    """The lane of an embedding job; long texts and disabled batching are embedded alone."""
    batched = config.batching.enabled and estimate_tokens(text) <= config.batching.max_prompt_tokens
    return Lane("embeddings", provider, model, {}, batched, config.batch_size(model),
                config.batching.flush_ms, config.batching.max_wait_ms)


class Lanes:
    """Where one process's batched jobs meet: first among themselves (``LocalLanes``), then in
    their lane's Redis list with the jobs of every process (``BatchQueue``)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.local = LocalLanes()
        self.queue = BatchQueue(store.client)

    def answer(self, lane: Lane, job_id: str, text: str) -> Answer | None:
        """``text``'s answer through its lane; None if the job finished (was cancelled) while it waited.

        Raises the ``ProviderError`` this job should handle: its own, or its batch's.
        """
        if not lane.batched:
            return ENDPOINTS[lane.endpoint].one(lane, text)
        window, run = lane.window(), functools.partial(self.run_batch, lane)
        outcome = self.local.outcome(window, job_id, text, run) or self.queue.await_outcome(window, job_id, text, run)
        return answer_from(lane, text, outcome)

    def run_batch(self, lane: Lane, entries: list[Entry]) -> list[dict[str, Any]]:
        """One provider call for the entries still wanted; one outcome per entry, in order."""
        finished = self.store.finished_among([entry.job_id for entry in entries])
        outcomes = [FINISHED] * len(entries)
        live = [i for i, entry in enumerate(entries) if entry.job_id not in finished]
        # In a stable order, so a retried batch sends the very same request.
        live.sort(key=lambda i: entries[i].text)
        if live:
            for i, outcome in zip(live, call_batch(lane, [entries[i].text for i in live])):
                outcomes[i] = outcome
        return outcomes


def answer_from(lane: Lane, text: str, outcome: dict[str, Any]) -> Answer | None:
    """A job's answer from its batch's outcome for it (``Lanes.run_batch``); None if the job finished
    meanwhile. Raises the ``ProviderError`` the job should handle; alone, it makes its own call."""
    if outcome["kind"] == "answer":
        return Answer(outcome["value"], Usage(**outcome["usage"]), outcome["size"])
    if outcome["kind"] == "error":
        raise error_from(outcome)
    if outcome["kind"] == "finished":
        return None
    return ENDPOINTS[lane.endpoint].one(lane, text)  # ALONE


def call_batch(lane: Lane, texts: list[str]) -> list[dict[str, Any]]:
    endpoint = ENDPOINTS[lane.endpoint]
    try:
        answers = endpoint.many(lane, texts) if len(texts) > 1 else [endpoint.one(lane, texts[0])]
    except ProviderError as exc:
        if exc.retryable or len(texts) == 1:
            log.info("batch of %d for %s failed (%s): each job handles it", len(texts), lane.model, exc.kind)
            return [error_outcome(exc)] * len(texts)
        log.info("batch of %d for %s refused (%s): sending each job alone", len(texts), lane.model, exc)
        return [ALONE] * len(texts)
    if answers is None:
        log.info("packed reply from %s did not parse: sending its %d jobs alone", lane.model, len(texts))
        return [ALONE] * len(texts)
    return [{"kind": "answer", "value": a.value, "usage": a.usage.as_dict(), "size": len(texts)} for a in answers]


def error_outcome(error: ProviderError) -> dict[str, Any]:
    return {"kind": "error", "class": type(error).__name__, "message": str(error), "provider": error.provider,
            "status": error.status, "request_id": error.request_id, "retry_after": error.retry_after}


def error_from(outcome: dict[str, Any]) -> ProviderError:
    """The batch's error, rebuilt in a member's task with its class (and so its retryability) intact."""
    cls = getattr(errors, outcome["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, ProviderError)):
        cls = ProviderError
    return cls(outcome["message"], provider=outcome["provider"], status=outcome["status"],
               request_id=outcome["request_id"], retry_after=outcome["retry_after"])


# -- how each endpoint answers several texts at once, and one alone


def complete_many(lane: Lane, texts: list[str]) -> list[Answer]:
    completions = lane.provider.complete(texts, lane.model, **lane.params)
    return [Answer(c.text, c.usage, len(texts)) for c in completions]


def complete_one(lane: Lane, text: str) -> Answer:
    completion = lane.provider.complete([text], lane.model, **lane.params)[0]
    return Answer(completion.text, completion.usage, 1)


def embed_many(lane: Lane, texts: list[str]) -> list[Answer]:
    result = lane.provider.embed(texts, lane.model)
    shares = lane.provider.split_usage(result.usage, len(texts))
    return [Answer(vector, share, len(texts)) for vector, share in zip(result.vectors, shares)]


def embed_one(lane: Lane, text: str) -> Answer:
    result = lane.provider.embed([text], lane.model)
    return Answer(result.vectors[0], result.usage, 1)


def pack_many(lane: Lane, texts: list[str]) -> list[Answer] | None:
    """Answers split from one packed chat call; None when the reply is not the list asked for."""
    completion = lane.provider.chat(packed_messages(texts), lane.model, **lane.params)
    replies = unpack_reply(completion.text, len(texts))
    if replies is None:
        return None
    shares = lane.provider.split_usage(completion.usage, len(texts))
    return [Answer(reply, share, len(texts)) for reply, share in zip(replies, shares)]


def chat_one(lane: Lane, text: str) -> Answer:
    completion = lane.provider.chat([{"role": "user", "content": text}], lane.model, **lane.params)
    return Answer(completion.text, completion.usage, 1)


@dataclass(frozen=True)
class Endpoint:
    many: Callable[[Lane, list[str]], list[Answer] | None]
    one: Callable[[Lane, str], Answer]


ENDPOINTS = {
    "completions": Endpoint(complete_many, complete_one),
    "pack": Endpoint(pack_many, chat_one),
    "embeddings": Endpoint(embed_many, embed_one),
}
