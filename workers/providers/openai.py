"""The OpenAI-compatible adapter: OpenAI itself, the Chinese clouds' compatible
endpoints (DashScope, DeepSeek, Moonshot, Zhipu, Ark, Qianfan v2), local servers
(vLLM, Ollama, llama.cpp) and the bundled simulator.

Besides the ``Provider`` calls it offers seams to the rest of the adapter layer:
``request`` (any call to the provider's API, on its pool with its keys and timeouts)
and ``read_chat`` (a chat completion body as a ``Completion``), which its Batch API
(``flowcloud.workers.providers.openai_batch``) is built on; ``url`` (where a call for a
model goes) and ``auth_headers`` (how the key is sent), which Azure's adapter
(``flowcloud.workers.providers.azure``) overrides. Everything else here is private.
"""

from __future__ import annotations

import json
from typing import Any

from flowcloud.workers.providers.base import Capability, Completion, Embeddings, ServedModel
from flowcloud.workers.providers.http import Reply, send
from flowcloud.workers.providers.openai_batch import OpenAIBatchAPI
from flowcloud.workers.providers.pooled import PooledProvider, as_date, optional_text

# Cached input: OpenAI's place for it first, then DeepSeek's (which counts hits beside misses).
USAGE = (("prompt_tokens",), "completion_tokens", (("prompt_tokens_details", "cached_tokens"), ("prompt_cache_hit_tokens",)))
# OpenAI's model list says nothing of deprecation; compatible services and Azure add these, each its own way.
DEPRECATED_FLAGS = ("deprecated", "is_deprecated")
DEPRECATED_STATES = frozenset({"deprecated", "deprecating", "retired", "retiring"})
STATE_FIELDS = ("lifecycle_status", "status")
DATE_FIELDS = ("deprecation_date", "deprecated_at", "deprecation_time", "retirement_date", "shutdown_date")


class OpenAIProvider(PooledProvider):
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.EMBEDDINGS, Capability.BATCH_API,
                              Capability.MODELS})

    def chat(self, messages: list[dict], model: str, **params) -> Completion:
        body = self._post("/chat/completions", {"model": model, "messages": messages, **params})
        return self.read_chat(body, model, optional_text(body.get("id")))

    def complete(self, prompts: list[str], model: str, **params) -> list[Completion]:
        body = self._post("/completions", {"model": model, "prompt": prompts, **params})
        choices = self._in_prompt_order(self._choices(body, expected=len(prompts)), len(prompts))
        # The provider reports usage for the whole call; each prompt is charged its share.
        shares = self.split_usage(self.token_counts(body, *USAGE), len(prompts))
        return [
            Completion(
                text=self.text_at(choice, "text", default=""),
                usage=share,
                model=optional_text(body.get("model")) or model,
                finish_reason=optional_text(choice.get("finish_reason")),
                request_id=optional_text(body.get("id")),
            )
            for choice, share in zip(choices, shares)
        ]

    def embed(self, inputs: list[str], model: str) -> Embeddings:
        body = self._post("/embeddings", {"model": model, "input": inputs})
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(inputs):
            raise self.malformed(f"expected {len(inputs)} embeddings")
        if not all(isinstance(item, dict) for item in data):
            raise self.malformed("an embedding is not an object")
        # An index ties a vector to its input, as it does a choice to its prompt; none given: the list's order.
        indices = [item.get("index", position) for position, item in enumerate(data)]
        if not all(_is_index(i) for i in indices) or set(indices) != set(range(len(inputs))):
            raise self.malformed(f"expected one embedding per input, indexed 0 to {len(inputs) - 1}")
        ordered = [item for _, item in sorted(zip(indices, data), key=lambda pair: pair[0])]
        return Embeddings([self._vector(item) for item in ordered], self.token_counts(body, *USAGE), model)

    def batch_api(self) -> OpenAIBatchAPI:
        return OpenAIBatchAPI(self)

    def models(self) -> list[ServedModel]:
        body = self.get(self.config.base_url + self.models_path())
        return [read_served(entry) for entry in self.listed(body)]

    # -- the seams the rest of the adapter layer builds on

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None,
                fields: dict[str, Any] | None = None) -> Reply:
        """Any call to the provider's API (a JSON ``payload``, a multipart upload of ``fields``, a GET):
        the whole 2xx reply, or a classified ``ProviderError``."""
        extra: dict[str, str] = {}
        body = None
        if payload is not None:
            extra["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        return self.keyed(lambda headers: send(self._pool, method, self.config.base_url + path, provider=self.name,
                                               headers={**headers, **extra}, timeout=self._timeout, body=body,
                                               fields=fields))

    def read_chat(self, body: dict, model: str, request_id: str | None) -> Completion:
        """A chat completion answer as a ``Completion``; ``model`` names it when the answer does not."""
        choice = self._choices(body, expected=1)[0]
        return Completion(
            text=self.text_at(choice, "message", "content", default=""),
            usage=self.token_counts(body, *USAGE),
            model=optional_text(body.get("model")) or model,
            finish_reason=optional_text(choice.get("finish_reason")),
            request_id=request_id,
        )

    def models_path(self) -> str:
        """Where the model list is, under ``base_url`` (Azure's takes an ``api-version``)."""
        return "/models"

    def url(self, path: str, model: str) -> str:
        """Where a call for ``model`` goes: the API root plus the endpoint's path (Azure's names a deployment)."""
        return self.config.base_url + path

    # -- sending

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.post(self.url(path, payload["model"]), payload)

    # -- reading answers

    def _choices(self, body: dict, expected: int) -> list[dict]:
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) < expected:
            raise self.malformed(f"expected {expected} choice(s) in the answer")
        if not all(isinstance(choice, dict) for choice in choices):
            raise self.malformed("a choice is not an object")
        return choices

    def _in_prompt_order(self, choices: list[dict], count: int) -> list[dict]:
        # Only the index ties a choice to its prompt: a gap or a repeat would hand one prompt's answer to another.
        if not all(_is_index(choice.get("index")) for choice in choices):
            raise self.malformed(f"expected one choice per prompt, indexed 0 to {count - 1}")
        by_index = {choice["index"]: choice for choice in choices}
        if len(choices) != count or set(by_index) != set(range(count)):
            raise self.malformed(f"expected one choice per prompt, indexed 0 to {count - 1}")
        return [by_index[i] for i in range(count)]

    def _vector(self, item: dict) -> list[float]:
        vector = item.get("embedding")
        if not isinstance(vector, list) or not vector or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector):
            raise self.malformed("an embedding is not a list of numbers")
        return vector


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_served(entry: dict) -> ServedModel:
    """One entry of an OpenAI-shaped model list, its deprecation read from whichever field the service uses."""
    states = {str(entry.get(name)).lower() for name in STATE_FIELDS if isinstance(entry.get(name), str)}
    deprecation = entry.get("deprecation")
    # Azure: {"deprecation": {"inference": <unix seconds>, "fine_tune": ...}}, a schedule that is not yet a flag.
    scheduled = deprecation.get("inference") if isinstance(deprecation, dict) else deprecation
    dates = [as_date(entry.get(name)) for name in DATE_FIELDS]
    date = next((d for d in dates if d), None)
    flagged = any(entry.get(name) is True for name in DEPRECATED_FLAGS) or bool(states & DEPRECATED_STATES)
    # llama-server lists one entry per loaded model with the other names it answers to (--alias).
    listed = entry.get("aliases")
    aliases = tuple(a for a in listed if isinstance(a, str) and a != entry["id"]) if isinstance(listed, list) else ()
    return ServedModel(entry["id"], deprecated=flagged or date is not None,
                       deprecation_date=date or as_date(scheduled), aliases=aliases)
