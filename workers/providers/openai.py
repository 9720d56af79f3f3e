"""The OpenAI-compatible adapter: OpenAI itself, the Chinese clouds' compatible
endpoints (DashScope, DeepSeek, Moonshot, Zhipu, Ark, Qianfan v2), local servers
(vLLM, Ollama, llama.cpp) and the bundled simulator.
"""

from __future__ import annotations

from typing import Any

from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.errors import MalformedResponse
from flowcloud.workers.core.guard import register_secret
from flowcloud.workers.providers.base import Capability, Completion, Embeddings, Provider, Usage
from flowcloud.workers.providers.http import make_pool, post_json


class OpenAIProvider(Provider):
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETIONS, Capability.EMBEDDINGS})

    def __init__(self, config: ProviderConfig, pool_size: int) -> None:
        super().__init__(config)
        self.pool = make_pool(pool_size, config.base_url)
        self.timeout = (config.timeout.connect, config.timeout.read)

    def headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        key = self.config.api_key()
        if key:
            register_secret(key)
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return post_json(
            self.pool,
            self.config.base_url + path,
            payload,
            provider=self.name,
            headers=self.headers(),
            timeout=self.timeout,
        )

    def chat(self, messages: list[dict], model: str, **params) -> Completion:
        body = self.post("/chat/completions", {"model": model, "messages": messages, **params})
        choice = self.choices(body, expected=1)[0]
        text = self.field(choice, "message", "content", default="")
        return Completion(
            text=text,
            usage=self.usage(body),
            model=body.get("model") or model,
            finish_reason=choice.get("finish_reason"),
            request_id=body.get("id"),
        )

    def complete(self, prompts: list[str], model: str, **params) -> list[Completion]:
        body = self.post("/completions", {"model": model, "prompt": prompts, **params})
        choices = self.in_prompt_order(self.choices(body, expected=len(prompts)), len(prompts))
        # The provider reports usage for the whole call; each prompt is charged its share.
        shares = self.split_usage(self.usage(body), len(prompts))
        return [
            Completion(
                text=self.field(choice, "text", default=""),
                usage=share,
                model=body.get("model") or model,
                finish_reason=choice.get("finish_reason"),
                request_id=body.get("id"),
            )
            for choice, share in zip(choices, shares)
        ]

    def embed(self, inputs: list[str], model: str) -> Embeddings:
        body = self.post("/embeddings", {"model": model, "input": inputs})
        data = body.get("data")
        if not isinstance(data, list) or len(data) != len(inputs):
            raise self.malformed(f"expected {len(inputs)} embeddings")
        if not all(isinstance(item, dict) for item in data):
            raise self.malformed("an embedding is not an object")
        ordered = sorted(data, key=lambda item: item.get("index", 0))
        return Embeddings([self.vector(item) for item in ordered], self.usage(body), model)

    def close(self) -> None:
        self.pool.clear()

    # -- reading answers defensively: a provider's garbage is a MalformedResponse, never a crash

    def choices(self, body: dict, expected: int) -> list[dict]:
        choices = body.get("choices")
        if not isinstance(choices, list) or len(choices) < expected:
            raise self.malformed(f"expected {expected} choice(s) in the answer")
        if not all(isinstance(choice, dict) for choice in choices):
            raise self.malformed("a choice is not an object")
        return choices

    def field(self, obj: dict, *path: str, default: str) -> str:
        for key in path:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return default
        if not isinstance(obj, str):
            raise self.malformed(f"{'.'.join(path)} is not text")
        return obj

    def in_prompt_order(self, choices: list[dict], count: int) -> list[dict]:
        # Only the index ties a choice to its prompt: a gap or a repeat would hand one prompt's answer to another.
        by_index = {choice.get("index"): choice for choice in choices}
        if len(choices) != count or set(by_index) != set(range(count)):
            raise self.malformed(f"expected one choice per prompt, indexed 0 to {count - 1}")
        return [by_index[i] for i in range(count)]

    def vector(self, item: dict) -> list[float]:
        vector = item.get("embedding")
        if not isinstance(vector, list) or not vector or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector):
            raise self.malformed("an embedding is not a list of numbers")
        return vector

    def usage(self, body: dict) -> Usage:
        usage = body.get("usage") or {}
        try:
            return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        except (TypeError, ValueError, AttributeError) as exc:
            raise self.malformed("usage is not a pair of token counts") from exc

    def malformed(self, what: str) -> MalformedResponse:
        return MalformedResponse(f"{self.name} sent an unreadable answer: {what}", provider=self.name)

