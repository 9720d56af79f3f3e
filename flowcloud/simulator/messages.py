"""Anthropic's Messages API (``POST /v1/messages``): request reading and response bodies, as plain dicts.

Held to what the real API refuses, so an adapter that gets Anthropic's shape
wrong fails here first: the key only in ``x-api-key``, an ``anthropic-version``
header, ``max_tokens`` required, no ``system`` turns (the system prompt is the
top-level ``system`` field), no fields the API does not know. Answers are the
OpenAI endpoints' (``api.chat_reply``, packed requests included) in content
blocks; errors are ``{"type": "error", "error": {"type": ..., "message": ...}}``.
Its model list shares ``GET /v1/models`` with OpenAI's; the server answers in
this shape a request that carries ``anthropic-version``.
"""

from __future__ import annotations

import uuid

from .answers import count_tokens, truncate_to_tokens
from .api import BadRequest, Call, Endpoint, chat_reply, max_tokens_of, message_text, model_of, read_nothing

# The request fields the Messages API knows; any other is a 400, as there.
FIELDS = frozenset({"model", "messages", "system", "max_tokens", "metadata", "stop_sequences", "stream",
                    "temperature", "top_k", "top_p", "tools", "tool_choice", "thinking", "service_tier"})
ROLES = frozenset({"user", "assistant"})

_ERRORS = {
    400: ("invalid_request_error", "The request was rejected (simulated)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource (simulated)."),
    404: ("not_found_error", "The requested resource could not be found (simulated)."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes (simulated)."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit (simulated)."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems (simulated)."),
    529: ("overloaded_error", "Overloaded (simulated)."),
}


def error_body(status: int, message: str | None = None) -> dict:
    """An Anthropic-shaped error body for ``status``."""
    kind, default = _ERRORS.get(status, ("api_error", "Simulated error."))
    return {"type": "error", "error": {"type": kind, "message": message or default}}


def read_messages(body: dict) -> Call:
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        raise BadRequest("model: Field required")
    if body.get("max_tokens") is None:
        raise BadRequest("max_tokens: Field required")
    max_tokens_of(body)
    if body.get("stream"):
        raise BadRequest("'stream': true is not supported by the simulator")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: must be a non-empty list of message objects")
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    system = message_text(body.get("system"))
    turns = [message_text(m.get("content")) for m in messages]
    users = [text for m, text in zip(messages, turns) if m["role"] == "user"]
    return Call(texts=[system, *turns] if system else turns, prompts=[users[-1] if users else turns[-1]])


def answer_messages(body: dict, call: Call) -> dict:
    # The system prompt as the OpenAI endpoints see it, so a packed request is answered the same way.
    as_chat = {"messages": [{"role": "system", "content": message_text(body.get("system"))}, *body["messages"]]}
    text, cut = truncate_to_tokens(chat_reply(as_chat, call), max_tokens_of(body))
    return {**_envelope(body), "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if cut else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": sum(count_tokens(t) for t in call.texts), "output_tokens": count_tokens(text)}}


def answer_models(listing: dict, call: Call) -> dict:
    """Anthropic's model list, one page holding all; the API marks no model deprecated."""
    data = [{"type": "model", "id": m["id"], "display_name": m["id"], "created_at": "2025-01-01T00:00:00Z"}
            for m in listing["models"]]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def empty_body(body: dict, endpoint: Endpoint) -> dict:
    """A 200 message without ``content``."""
    return _envelope(body)


def _envelope(body: dict) -> dict:
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model_of(body)}


MESSAGES_ENDPOINTS = {
    "/v1/messages": Endpoint("message", read_messages, answer_messages, auth=("x-api-key",),
                             headers=("anthropic-version",), error=error_body, empty=empty_body,
                             request_id_header="request-id"),
}
MODELS_ENDPOINT = Endpoint("list", read_nothing, answer_models, method="GET", auth=("x-api-key",),
                           headers=("anthropic-version",), error=error_body, request_id_header="request-id")
