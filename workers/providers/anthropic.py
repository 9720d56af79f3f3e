"""The Anthropic adapter: chat through the Messages API, ``POST {base_url}/v1/messages``.

Jobs carry OpenAI-style conversations; this module is where they become
Anthropic's shape and back. System (and developer) messages go to the top-level
``system`` field, since the API refuses them as turns; ``max_tokens``, which the API
requires, is the job's or the provider's ``default_max_tokens``; ``stop`` becomes
``stop_sequences``. An option the API has no name for is refused as an
``InvalidJob`` rather than dropped, so a job never runs on settings it did not ask
for. The key goes in ``x-api-key``, the API version in ``anthropic-version``.

Error statuses, Anthropic's error bodies (``{"type": "error", "error": {...}}``),
``retry-after`` and 529 (overloaded, a retryable ``ServerError``) are translated by
``flowcloud.workers.providers.http`` like every provider's. Chat and the model
list (``GET /v1/models``, followed page by page; a dated snapshot such as
``claude-3-5-haiku-20241022`` is also listed under the aliases that reach it,
``claude-3-5-haiku`` and ``claude-3-5-haiku-latest``): no embeddings, no legacy
completions, and Anthropic's own batch interface is not offered.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from flowcloud.workers.core.config_sections import ANTHROPIC_VERSION
from flowcloud.workers.core.errors import InvalidJob
from flowcloud.workers.core.secrets import Key
from flowcloud.workers.providers.base import Capability, Completion, ServedModel
from flowcloud.workers.providers.pooled import PooledProvider, optional_text

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models?limit=1000"
# Pages followed at most: a list that never ends must not hold a check forever.
MODEL_PAGES = 20
SNAPSHOT = re.compile(r"^(?P<alias>.+)-\d{8}$")
SYSTEM_ROLES = frozenset({"system", "developer"})
TURN_ROLES = frozenset({"user", "assistant"})
# Job options the Messages API takes, and the name it knows each by.
OPTIONS = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stop": "stop_sequences"}
# Anthropic's stop reasons as the finish reasons records already use (OpenAI's).
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                  "refusal": "content_filter"}
# Cache writes and reads are input tokens too: reads are billed at the cached input price, writes at the
# input price (Anthropic charges a quarter more for them).
USAGE = (("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"), "output_tokens",
         (("cache_read_input_tokens",),))


class AnthropicProvider(PooledProvider):
    capabilities = frozenset({Capability.CHAT, Capability.MODELS})

    def chat(self, messages: list[dict], model: str, **params) -> Completion:
        body = self.post(self.config.base_url + MESSAGES_PATH, self.request_body(messages, model, params))
        return self.read_message(body, model)

    def models(self) -> list[ServedModel]:
        served: list[ServedModel] = []
        url = self.config.base_url + MODELS_PATH
        for _ in range(MODEL_PAGES):
            body = self.get(url)
            served += [served_model(entry["id"]) for entry in self.listed(body)]
            if body.get("has_more") is not True or not isinstance(body.get("last_id"), str):
                break
            url = f"{self.config.base_url}{MODELS_PATH}&after_id={quote(body['last_id'], safe='')}"
        return served

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def headers(self, key: Key | None) -> dict[str, str]:
        return {**super().headers(key), "anthropic-version": self.config.anthropic_version or ANTHROPIC_VERSION}

    def request_body(self, messages: list[dict], model: str, params: dict[str, Any]) -> dict[str, Any]:
        """The Messages API request for an OpenAI-style conversation and job options."""
        unknown = sorted(set(params) - set(OPTIONS))
        if unknown:
            raise InvalidJob(f"provider {self.name!r} (Anthropic's Messages API) takes no option "
                             f"{', '.join(unknown)}; it takes {', '.join(OPTIONS)}")
        body: dict[str, Any] = {"model": model, "max_tokens": params.get("max_tokens") or self.config.default_max_tokens,
                                "messages": self._turns(messages)}
        system = [m.get("content") or "" for m in messages if m.get("role") in SYSTEM_ROLES]
        if system:
            body["system"] = "\n\n".join(system)
        for option in ("temperature", "top_p", "stop"):
            if params.get(option) is not None:
                body[OPTIONS[option]] = params[option]
        if isinstance(body.get("stop_sequences"), str):
            body["stop_sequences"] = [body["stop_sequences"]]
        return body

    def read_message(self, body: dict, model: str) -> Completion:
        """A Messages API answer as a ``Completion``: its text blocks joined, thinking and tool blocks left out."""
        content = body.get("content")
        if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
            raise self.malformed("content is not a list of blocks")
        text = "".join(self.text_at(block, "text", default="") for block in content if block.get("type") == "text")
        stop_reason = optional_text(body.get("stop_reason"))
        return Completion(
            text=text,
            usage=self.token_counts(body, *USAGE),
            model=optional_text(body.get("model")) or model,
            finish_reason=FINISH_REASONS.get(stop_reason, stop_reason) if stop_reason is not None else None,
            request_id=optional_text(body.get("id")),
        )

    def _turns(self, messages: list[dict]) -> list[dict[str, Any]]:
        turns = []
        for message in messages:
            role = message.get("role")
            if role in TURN_ROLES:
                turns.append({"role": role, "content": message.get("content") or ""})
            elif role not in SYSTEM_ROLES:
                raise InvalidJob(f"provider {self.name!r} (Anthropic's Messages API) takes no {role!r} messages; "
                                 "send system, user and assistant messages")
        if not any(turn["role"] == "user" for turn in turns):
            raise InvalidJob(f"provider {self.name!r} needs a user message besides the system prompt")
        return turns


def served_model(model_id: str) -> ServedModel:
    """A listed model with the aliases that reach a dated snapshot (the list names only snapshots)."""
    snapshot = SNAPSHOT.match(model_id)
    aliases = (snapshot["alias"], snapshot["alias"] + "-latest") if snapshot else ()
    return ServedModel(model_id, aliases=aliases)
