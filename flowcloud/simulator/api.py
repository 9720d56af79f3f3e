"""OpenAI request reading and response bodies, as plain dicts, and the routes that serve them
(OpenAI's ``/v1/...`` and Azure's deployment paths).

Each endpoint is a pair of pure functions: ``read`` checks a request body and
pulls out its text, ``answer`` builds the success body. The server wraps them
with authentication, faults, latency and bookkeeping; nothing here knows
about HTTP or time spent, and of the faults only ``garbage``, ``refuse`` and ``blank``, which change
what a chat reply says.

Packed chat requests are answered the way a model that follows instructions
would: a system message asking for "a JSON array of N strings" and a user
message that is a JSON array of N prompts get a JSON array of
``answer_for(prompt)``, one per prompt, in order.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from .answers import answer_for, count_tokens, embedding_for, truncate_to_tokens
from .faults import answer_shape

DEFAULT_MODEL = "flowcloud-sim"
# Listed by /v1/models unless /_sim/config sets other "models"; any name is answered just the same.
MODELS = (DEFAULT_MODEL, "gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small")
MAX_EMBEDDING_DIMENSIONS = 4096
# How a packed request asks for its answers (flowcloud's flowcloud.workers.lanes.packing writes it this way).
PACKED_REPLY_REQUEST = re.compile(r"Reply with only a JSON array of (\d+) strings")

_ERRORS = {
    400: ("invalid_request_error", None, "The request was rejected (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to use this model (simulated)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)."),
    408: ("timeout", None, "Request timed out (simulated)."),
    409: ("invalid_request_error", "conflict", "The request conflicts with another (simulated)."),
    422: ("invalid_request_error", None, "The request could not be processed (simulated)."),
    413: ("invalid_request_error", "request_too_large", "The request is too large (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    500: ("server_error", None, "The server had an error while processing your request (simulated)."),
    502: ("server_error", "bad_gateway", "Bad gateway (simulated)."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded (simulated)."),
    529: ("server_error", "overloaded", "The service is overloaded (simulated)."),
}


class BadRequest(Exception):
    """A request body the simulator will not answer; becomes a 400."""


@dataclass(frozen=True)
class Call:
    """The text of one request: ``texts`` is everything sent, ``prompts`` what is answered."""

    texts: list[str]
    prompts: list

    @property
    def log_text(self) -> str:
        return "\n".join(p if isinstance(p, str) else str(p) for p in self.prompts)


def error_body(status: int, message: str | None = None) -> dict:
    """An OpenAI-shaped error body for ``status``."""
    kind, code, default = _ERRORS.get(status, ("server_error", None, "Simulated error."))
    return {"error": {"message": message or default, "type": kind, "code": code}}


def model_of(body: dict) -> str:
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string")
    return model


def max_tokens_of(body: dict) -> int | None:
    value = body.get("max_tokens", body.get("max_completion_tokens"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'max_tokens' must be a whole number >= 1, got {value!r}")
    return value


def _check_common(body: dict) -> None:
    # Checked while reading so a bad value is a 400 before any latency or fault.
    model_of(body)
    max_tokens_of(body)


def _header(body: dict, prefix: str, obj: str) -> dict:
    return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": obj,
            "created": int(time.time()), "model": model_of(body)}


def _usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict:
    usage = {"prompt_tokens": prompt_tokens}
    if completion_tokens is not None:
        usage["completion_tokens"] = completion_tokens
    usage["total_tokens"] = prompt_tokens + (completion_tokens or 0)
    return usage


def message_text(content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Content parts (OpenAI's multimodal form): only text parts carry text.
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise BadRequest("message 'content' must be a string or a list of content parts")


def read_chat(body: dict) -> Call:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a non-empty list of message objects")
    if body.get("stream"):
        raise BadRequest("'stream': true is not supported by the simulator")
    _check_common(body)
    texts = [message_text(m.get("content")) for m in messages]
    users = [text for m, text in zip(messages, texts) if m.get("role") == "user"]
    return Call(texts=texts, prompts=[users[-1] if users else texts[-1]])


def packed_prompts(messages: list[dict]) -> list[str] | None:
    """The prompts of a packed chat request, or None when ``messages`` are an ordinary conversation."""
    system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "system")
    asked = PACKED_REPLY_REQUEST.search(system)
    users = [m for m in messages if m.get("role") == "user"]
    if not asked or not users:
        return None
    try:
        prompts = json.loads(message_text(users[-1].get("content")))
    except ValueError:
        return None
    if not isinstance(prompts, list) or len(prompts) != int(asked.group(1)):
        return None
    return prompts if all(isinstance(p, str) for p in prompts) else None


SHAPED_ANSWERS = {"refuse": "I'm sorry, but I can't help with that request.", "blank": ""}


def chat_reply(body: dict, call: Call) -> str:
    """What the assistant says: the answer to the last user prompt, or a packed request's list of answers."""
    prompts = packed_prompts(body["messages"])
    shape = answer_shape(call.texts)
    if shape in SHAPED_ANSWERS:
        return SHAPED_ANSWERS[shape]
    if prompts is None:
        return answer_for(call.prompts[0])
    if shape == "garbage":
        return "Sure! Here are the answers:\n" + "\n".join(
            f"{i}. {answer_for(p)}" for i, p in enumerate(prompts, 1))
    return json.dumps([answer_for(p) for p in prompts])


def answer_chat(body: dict, call: Call) -> dict:
    text, cut = truncate_to_tokens(chat_reply(body, call), max_tokens_of(body))
    prompt_tokens = sum(count_tokens(t) for t in call.texts)
    choice = {"index": 0, "message": {"role": "assistant", "content": text},
              "finish_reason": "length" if cut else "stop"}
    return {**_header(body, "chatcmpl", "chat.completion"), "choices": [choice],
            "usage": _usage(prompt_tokens, count_tokens(text))}


def report_cached_tokens(answer: dict, cached: int) -> None:
    """OpenAI's place for cached input tokens, which it sends on every chat answer (0 on a miss)."""
    usage = answer["usage"]
    usage["prompt_tokens_details"] = {"cached_tokens": min(cached, usage["prompt_tokens"])}


def read_completion(body: dict) -> Call:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("'prompt' must be a string or a non-empty list of strings")
    _check_common(body)
    return Call(texts=prompts, prompts=prompts)


def answer_completion(body: dict, call: Call) -> dict:
    max_tokens = max_tokens_of(body)
    choices, completion_tokens = [], 0
    for index, prompt in enumerate(call.prompts):
        text, cut = truncate_to_tokens(answer_for(prompt), max_tokens)
        completion_tokens += count_tokens(text)
        choices.append({"index": index, "text": text, "logprobs": None,
                        "finish_reason": "length" if cut else "stop"})
    prompt_tokens = sum(count_tokens(p) for p in call.prompts)
    return {**_header(body, "cmpl", "text_completion"), "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens)}


def _is_token_list(item: object) -> bool:
    return isinstance(item, list) and bool(item) and all(type(t) is int for t in item)


def read_embeddings(body: dict) -> Call:
    raw = body.get("input")
    # A single string, a list of strings, or pre-tokenised input (LangChain's default).
    if isinstance(raw, str) or _is_token_list(raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(i, str) or _is_token_list(i) for i in raw):
        raise BadRequest("'input' must be a string, a list of strings or a list of token lists")
    dimensions = body.get("dimensions", 16)
    whole = isinstance(dimensions, int) and not isinstance(dimensions, bool)
    if not whole or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS:
        raise BadRequest(f"'dimensions' must be a whole number from 1 to {MAX_EMBEDDING_DIMENSIONS}")
    model_of(body)
    return Call(texts=[i for i in raw if isinstance(i, str)], prompts=raw)


def answer_embeddings(body: dict, call: Call) -> dict:
    dimensions = body.get("dimensions", 16)
    data, tokens = [], 0
    for index, item in enumerate(call.prompts):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += count_tokens(item) if isinstance(item, str) else len(item)
        data.append({"object": "embedding", "index": index, "embedding": embedding_for(text, dimensions)})
    return {"object": "list", "data": data, "model": model_of(body), "usage": _usage(tokens)}


def read_nothing(body: dict) -> Call:
    return Call(texts=[], prompts=[])


def answer_models(listing: dict, call: Call) -> dict:
    """OpenAI's model list; a deprecated model carries the ``deprecated`` and ``deprecation_date`` fields
    some compatible services add (OpenAI's own list has none)."""
    return {"object": "list", "data": [
        {"id": m["id"], "object": "model", "created": 0, "owned_by": "flowcloud-simulator",
         **({"deprecated": True, "deprecation_date": m["deprecation_date"]} if m["deprecated"] else {})}
        for m in listing["models"]]}


def answer_azure_models(listing: dict, call: Call) -> dict:
    """Azure's ``/openai/models``: a lifecycle status per model, and the retirement date as Unix seconds."""
    return {"object": "list", "data": [
        {"id": m["id"], "object": "model", "created_at": 0, "status": "succeeded",
         "lifecycle_status": "deprecated" if m["deprecated"] else "generally-available",
         "deprecation": {"inference": _unix(m["deprecation_date"]) if m["deprecation_date"] else 4102444800}}
        for m in listing["models"]]}


def _unix(date: str) -> int:
    try:
        return int(datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return 0


def empty_body(body: dict, endpoint: Endpoint) -> dict:
    """A 200 body with the envelope but no ``choices`` or ``data``."""
    prefix = "chatcmpl" if endpoint.object == "chat.completion" else "sim"
    try:
        return _header(body, prefix, endpoint.object)
    except BadRequest:
        return {"object": endpoint.object}


@dataclass(frozen=True)
class Endpoint:
    """How to read one endpoint's request and build its replies, and what the request must carry.

    ``auth`` names the ways the key may be presented (see ``state.KEY_READERS``);
    ``headers`` and ``query`` are what a request must carry besides (Anthropic's
    ``anthropic-version``, Azure's ``api-version``), a 400 without them. ``error`` and
    ``empty`` build the API's error body and its fault ``empty``'s body.
    """

    object: str
    read: Callable[[dict], Call]
    answer: Callable[[dict, Call], dict]
    method: str = "POST"
    auth: tuple[str, ...] = ("bearer", "api-key")
    headers: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    error: Callable[[int, str | None], dict] = error_body
    empty: Callable[[dict, Endpoint], dict] = empty_body
    request_id_header: str = "x-request-id"
    # Writes the prompt's cached tokens into an answer's usage; None: the endpoint caches no prompt.
    report_cached: Callable[[dict, int], None] | None = None


ENDPOINTS = {
    "/v1/chat/completions": Endpoint("chat.completion", read_chat, answer_chat, report_cached=report_cached_tokens),
    "/v1/completions": Endpoint("text_completion", read_completion, answer_completion),
    "/v1/embeddings": Endpoint("list", read_embeddings, answer_embeddings),
    "/v1/models": Endpoint("list", read_nothing, answer_models, method="GET"),
}

# Azure OpenAI: the same bodies under a deployment's path, the key in an api-key header and the
# api-version query required. The deployment names the model when the body does not.
AZURE_DEPLOYMENT = "/openai/deployments/{deployment}"
AZURE_ENDPOINTS = {
    AZURE_DEPLOYMENT + path.removeprefix("/v1"): replace(ENDPOINTS[path], auth=("api-key",), query=("api-version",))
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
}
AZURE_ENDPOINTS["/openai/models"] = Endpoint("list", read_nothing, answer_azure_models, method="GET",
                                             auth=("api-key",), query=("api-version",))
