"""The answer cache and single-flight: one provider call for identical requests.

The key is a hash of what changes the answer (model, messages, generation
parameters), never of job ids or times, inside a namespace per flow, so one
flow's answers are not served to another. Answers are written by the worker
after a successful call and read by the client at submit: a hit finishes the
job there and then, without touching the queue. Identical jobs already queued
together are coalesced in the worker: the first takes the key's flight and
calls the provider, the others wait (as countdowns, holding no slot) for its
answer in the cache. Shared by client and worker; imports nothing worker-side.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flowcloud.workers.core.jobspec import CompletionSpec
from flowcloud.workers.core.redis_conn import RELEASE_IF_OWNER, checked, queue_script

if TYPE_CHECKING:
    import redis

KEY_PREFIX = "flowcloud:cache:"
FLIGHT_PREFIX = "flowcloud:inflight:"
NO_FLOW = "-"


def cache_key(spec: CompletionSpec, model: str) -> str:
    """The canonical key of ``spec`` sent to ``model``."""
    identity = {
        "model": model,
        "messages": [message.model_dump() for message in spec.messages],
        "params": spec.provider_params(),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{KEY_PREFIX}{spec.flow or NO_FLOW}:{digest}"


class AnswerCache:
    """Answers by cache key, and the flights that keep identical calls to one at a time.

    A flight is a key owned by one job, with a TTL that outlasts one provider
    call: an owner that dies lets the next identical job take over. Each side of
    a provider call rides on a round trip the worker makes anyway: look up (or
    lead) with the write that marks the job running, store and land with the
    write that finishes it.
    """

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self._release = client.register_script(RELEASE_IF_OWNER)

    def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The cached answers for ``keys``, None where there is none, in one round trip."""
        return [json.loads(raw) if raw else None for raw in self.client.mget(keys)] if keys else []

    def lookup_or_lead_in(self, pipe: redis.client.Pipeline, key: str, owner: str, flight_ttl: float,
                          ) -> Callable[[Iterator[Any]], tuple[dict[str, Any] | None, bool]]:
        """Queue on ``pipe`` the look-up of ``key``'s answer and ``owner``'s bid to lead its call.

        Returns the reader of the outcome (call it with the pipeline's replies,
        in the order they were queued): (the cached answer or None,
        whether ``owner`` now leads the call for ``key``).
        """
        pipe.get(key)
        pipe.set(FLIGHT_PREFIX + key, owner, nx=True, px=int(flight_ttl * 1000))

        def read(replies: Iterator[Any]) -> tuple[dict[str, Any] | None, bool]:
            raw, leads = next(replies), next(replies)  # both taken before either may raise
            raw, leads = checked(raw), checked(leads)
            if raw:
                if leads:  # answered meanwhile: nothing to lead
                    self.land(key, owner)
                return json.loads(raw), False
            return None, bool(leads)

        return read

    def store_and_land_in(self, pipe: redis.client.Pipeline, key: str, answer: dict[str, Any], owner: str,
                          ) -> Callable[[Iterator[Any]], None]:
        """Queue on ``pipe``: keep the answer, then end the flight, so a waiting twin finds one or
        the other (one connection runs a pipeline's commands in order: no MULTI needed).
        Returns the reader that takes its replies."""
        pipe.set(key, json.dumps(answer), ex=self.ttl)
        released = queue_script(pipe, self._release, keys=[FLIGHT_PREFIX + key], args=[owner])

        def read(replies: Iterator[Any]) -> None:
            stored, landed = next(replies), next(replies)  # both taken before either may raise
            checked(stored)
            released(landed)

        return read

    def land_in(self, pipe: redis.client.Pipeline, key: str, owner: str) -> Callable[[Iterator[Any]], None]:
        """``land`` queued on ``pipe``; returns the reader that takes its reply."""
        released = queue_script(pipe, self._release, keys=[FLIGHT_PREFIX + key], args=[owner])
        return lambda replies: released(next(replies))

    def land(self, key: str, owner: str) -> None:
        """End ``owner``'s flight for ``key`` without an answer (the call failed)."""
        self._release(keys=[FLIGHT_PREFIX + key], args=[owner])
