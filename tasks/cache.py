"""The answer cache: a finished completion, reused for an identical request.

The key is a hash of what changes the answer (model, messages, generation
parameters), never of job ids or times, inside a namespace per flow, so one
flow's answers are not served to another. Answers are written by the worker
after a successful call and read by the client at submit: a hit finishes the
job there and then, without touching the queue. Shared by client and worker;
imports nothing worker-side.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from tasks.jobspec import CompletionSpec

if TYPE_CHECKING:
    import redis

KEY_PREFIX = "flowcloud:cache:"
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
    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """The cached answers for ``keys``, None where there is none, in one round trip."""
        return [json.loads(raw) if raw else None for raw in self.client.mget(keys)] if keys else []

    def put(self, key: str, answer: dict[str, Any]) -> None:
        self.client.set(key, json.dumps(answer), ex=self.ttl)
