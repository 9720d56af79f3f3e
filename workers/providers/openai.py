"""The OpenAI-compatible adapter: OpenAI itself, the Chinese clouds' compatible
endpoints (DashScope, DeepSeek, Moonshot, Zhipu, Ark, Qianfan v2), local servers
(vLLM, Ollama, llama.cpp) and the bundled simulator.

Besides the ``Provider`` calls it offers two seams to the rest of the adapter layer:
``request`` (any call to the provider's API, on its pool with its key and timeouts)
and ``read_chat`` (a chat completion body as a ``Completion``), which its Batch API
(``flowcloud.workers.providers.openai_batch``) is built on. Everything else here is private.
"""

from __future__ import annotations

import json
from typing import Any

from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.errors import MalformedResponse
from flowcloud.workers.core.guard import register_secret
from flowcloud.workers.providers.base import Capability, Completion, Embeddings, Provider, Usage
from flowcloud.workers.providers.http import Reply, make_pool, post_json, send
from flowcloud.workers.providers.openai_batch import OpenAIBatchAPI


class OpenAIProvider(Provider):
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.EMBEDDINGS, Capability.BATCH_API})

    def __init__(self, config: ProviderConfig, pool_size: int) -> None:
        super().__init__(config)
        self._pool = make_pool(pool_size, config.base_url)
        self._timeout = (config.timeout.connect, config.timeout.read)

    def chat(self, messages: list[dict], model: str, **params) -> Completion:
        body = self._post("/chat/completions", {"model": model, "messages": messages, **params})
        return self.read_chat(body, model, body.get("id"))

    def complete(self, prompts: list[str], model: str, **params) -> list[Completion]:
        body = self._post("/completions", {"model": model, "prompt": prompts, **params})
        choices = self._in_prompt_order(self._choices(body, expected=len(prompts)), len(prompts))
        # The provider reports usage for the whole call; each prompt is charged its share.
        shares = self.split_usage(self._usage(body), len(prompts))
        return [
            Completion(
                text=self._field(choice, "text", default=""),
                usage=share,
                model=body.get("model") or model,
                finish_reason=choice.get("finish_reason"),
                request_id=body.get("id"),
            )
            for choice, share in zip(choices, shares)
        ]

    def embed(self, inputs: list[str], model: str) -> Embeddings:
        body = self._post("/embeddings", {"model": model, "input": inputs})
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(inputs):
            raise self._malformed(f"expected {len(inputs)} embeddings")
        if not all(isinstance(item, dict) for item in data):
            raise self._malformed("an embedding is not an object")
        ordered = sorted(data, key=lambda item: item.get("index", 0))
        return Embeddings([self._vector(item) for item in ordered], self._usage(body), model)

    def batch_api(self) -> OpenAIBatchAPI:
        return OpenAIBatchAPI(self)

    def close(self) -> None:
        self._pool.clear()

    # -- the seams the rest of the adapter layer builds on

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None,
                fields: dict[str, Any] | None = None) -> Reply:
        """Any call to the provider's API (a JSON ``payload``, a multipart upload of ``fields``, a GET):
        the whole 2xx reply, or a classified ``ProviderError``."""
        headers = self._headers()
        body = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        return send(self._pool, method, self.config.base_url + path, provider=self.name, headers=headers,
                    timeout=self._timeout, body=body, fields=fields)

    def read_chat(self, body: dict, model: str, request_id: str | None) -> Completion:
        """A chat completion answer as a ``Completion``; ``model`` names it when the answer does not."""
        choice = self._choices(body, expected=1)[0]
        return Completion(
            text=self._field(choice, "message", "content", default=""),
            usage=self._usage(body),
            model=body.get("model") or model,
            finish_reason=choice.get("finish_reason"),
            request_id=request_id,
        )

    # -- sending

    def _headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        key = self.config.api_key()
        if key:
            register_secret(key)
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return post_json(
            self._pool,
            self.config.base_url + path,
            payload,
            provider=self.name,
            headers=self._headers(),
            timeout=self._timeout,
        )

    # -- reading answers defensively: a provider's garbage is a MalformedResponse, never a crash

    def _choices(self, body: dict, expected: int) -> list[dict]:
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) < expected:
            raise self._malformed(f"expected {expected} choice(s) in the answer")
        if not all(isinstance(choice, dict) for choice in choices):
            raise self._malformed("a choice is not an object")
        return choices

    def _field(self, obj: dict, *path: str, default: str) -> str:
        for key in path:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return default
        if not isinstance(obj, str):
            raise self._malformed(f"{'.'.join(path)} is not text")
        return obj

    def _in_prompt_order(self, choices: list[dict], count: int) -> list[dict]:
        # Only the index ties a choice to its prompt: a gap or a repeat would hand one prompt's answer to another.
        by_index = {choice.get("index"): choice for choice in choices}
        if len(choices) != count or set(by_index) != set(range(count)):
            raise self._malformed(f"expected one choice per prompt, indexed 0 to {count - 1}")
        return [by_index[i] for i in range(count)]

    def _vector(self, item: dict) -> list[float]:
        vector = item.get("embedding")
        if not isinstance(vector, list) or not vector or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector):
            raise self._malformed("an embedding is not a list of numbers")
        return vector

    def _usage(self, body: dict) -> Usage:
        usage = body.get("usage") or {}
        try:
            return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._malformed("usage is not a pair of token counts") from exc

    def _malformed(self, what: str) -> MalformedResponse:
        return MalformedResponse(f"{self.name} sent an unreadable answer: {what}", provider=self.name)
