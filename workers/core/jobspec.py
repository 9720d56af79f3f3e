"""What a completion or embedding job asks for, validated at submit and again in the worker.

The spec travels in the Celery message, so it holds only what the provider call
needs: messages (or the text to embed), model, parameters and the flow to bill.
Never a key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flowcloud.workers.core.chunking import clean_text
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.errors import InvalidJob

# Generation parameters passed through to the provider as they are.
PASSTHROUGH_OPTIONS = frozenset(
    {"temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "response_format", "n"}
)
PREVIEW_CHARS = 40
DEFAULT_PRIORITY = 5
Fold = Callable[[str], str]


def cut_short(text: str) -> str:
    """``text`` with its white space folded, cut to ``PREVIEW_CHARS`` for a preview."""
    text = " ".join(text.split())
    return text[:PREVIEW_CHARS] + ("..." if len(text) > PREVIEW_CHARS else "")


def preview_head(text: str, mask: Fold | None) -> str:
    """The start of ``text`` for a preview, masked by ``mask`` when given: masked before it is cut, so a
    value that the cut would leave half-shown is masked whole."""
    head = text[:PREVIEW_CHARS * 4]
    return cut_short(mask(head) if mask is not None else head)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class CompletionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    flow: str | None = Field(None, max_length=200)
    max_tokens: int | None = Field(None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    cache: bool = True  # False: always call the provider, and keep the answer out of the cache
    # Read only at submit, by degraded mode: low-priority jobs are the ones refused when the fleet is strained.
    priority: int = Field(DEFAULT_PRIORITY, ge=0, le=9)

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - PASSTHROUGH_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(PASSTHROUGH_OPTIONS))}"
            )
        try:  # they travel in the task message and on to the provider, both as JSON
            json.dumps(options, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"options must be JSON values (text, finite numbers, lists, objects): {exc}") from None
        return options

    def provider_params(self) -> dict[str, Any]:
        params = dict(self.options)
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params

    def preview(self, mask: Fold | None = None) -> str:
        """A short, safe description of the job for Flower and logs: never the whole prompt."""
        text = " ".join(self.messages[-1].content.split())
        return f"{preview_head(text, mask)!r} ({len(text)} chars, model={self.model or 'default'})"


def build_spec(
    prompt: str | list[dict],
    *,
    model: str | None = None,
    flow: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    options: dict[str, Any] | None = None,
    cache: bool = True,
    priority: int = DEFAULT_PRIORITY,
) -> CompletionSpec:
    """A validated spec from a prompt string or an OpenAI-style message list."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidJob("the prompt is empty")
        messages: list[Any] = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)):
        messages = list(prompt)
    else:
        raise InvalidJob(f"prompt: give a string or a list of messages, not {type(prompt).__name__}")
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return parse_spec(
        {"messages": messages, "model": model, "flow": flow, "max_tokens": max_tokens, "options": options or {},
         "cache": cache, "priority": priority}
    )


def apply_degraded(spec: CompletionSpec, mode: dict[str, Any] | None, config: Config) -> CompletionSpec:
    """``spec`` as degraded mode lets it run (``mode`` is Beat's flag; None: normal running).

    A job below the mode's priority floor raises ``InvalidJob`` saying why and
    what to do; a job for a model that costs more than the mode's cheaper model
    is sent to that model instead. A cheaper model this configuration does not
    know is never substituted: the job would fail on a model no one serves.
    """
    if not mode:
        return spec
    floor = mode.get("refuse_priority_below")
    if floor is not None and spec.priority < floor:
        raise InvalidJob(f"refused: flowcloud is in degraded mode ({mode.get('reason')}) and takes no jobs with "
                         f"priority below {floor} (this one has {spec.priority}); submit it later, or with "
                         f"priority={floor} or more if it cannot wait")
    wanted, cheaper = config.model(spec.model or config.default_model), config.model(mode.get("model") or "")
    if wanted and cheaper and cheaper.kind == wanted.kind and _price(cheaper) < _price(wanted):
        return spec.model_copy(update={"model": cheaper.name})
    return spec


def _price(model: Any) -> float:
    return model.input_per_mtok + model.output_per_mtok


def parse_spec(data: Any) -> CompletionSpec:
    return parse(CompletionSpec, data)


class EmbeddingSpec(BaseModel):
    """One text to turn into a vector with an embedding model."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1)
    model: str | None = None
    flow: str | None = Field(None, max_length=200)

    @field_validator("input")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("the text to embed is empty")
        return text

    def preview(self, mask: Fold | None = None) -> str:
        """A short, safe description of the job for Flower and logs: never the whole text."""
        text = " ".join(self.input.split())
        return f"embed {preview_head(text, mask)!r} ({len(text)} chars, model={self.model})"


def build_embedding_spec(text: str, *, model: str, flow: str | None = None) -> EmbeddingSpec:
    """A validated embedding spec; ``model`` is already resolved (see ``embedding_model``)."""
    if not isinstance(text, str):
        raise InvalidJob(f"input: give the text to embed as a string, not {type(text).__name__}")
    return parse(EmbeddingSpec, {"input": text, "model": model, "flow": flow})


def parse_embedding_spec(data: Any) -> EmbeddingSpec:
    return parse(EmbeddingSpec, data)


def parse_job(data: Any) -> CompletionSpec | EmbeddingSpec:
    """Either kind of spec, told apart by its shape: only an embedding job has ``input``."""
    if isinstance(data, dict) and "input" in data:
        return parse_embedding_spec(data)
    return parse_spec(data)


def check_model(config: Config, model: str, kind: Literal["chat", "embedding"]) -> None:
    """Raise ``InvalidJob`` unless some provider serves ``model`` and it is a ``kind`` model."""
    if not isinstance(model, str):
        raise InvalidJob(f"model: give the model's name as a string, not {type(model).__name__}")
    _, entry = config.serving(model)
    if entry.kind != kind:
        use = "client.embed" if entry.kind == "embedding" else "client.submit"
        raise InvalidJob(f"{model!r} is {'an embedding' if entry.kind == 'embedding' else 'a chat'} model; "
                         f"send its jobs with {use}")


def embedding_model(config: Config, model: str | None) -> str:
    """``model`` checked to be an embedding model, or the first configured one when None."""
    if model is None:
        model = next((m.name for p in config.providers for m in p.models if m.kind == "embedding"), None)
        if model is None:
            raise InvalidJob("no embedding model is configured; add a model with 'kind: embedding' to a provider")
    check_model(config, model, "embedding")
    return model


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` as ``model``; a problem becomes ``InvalidJob`` naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        raise InvalidJob(f"{where}: {first['msg'].removeprefix('Value error, ')}") from exc


class FlowSpec(BaseModel):
    """A whole Langflow flow to run on a flow worker, with its chat input."""

    model_config = ConfigDict(extra="forbid")

    flow: dict[str, Any]
    input_value: str = ""
    name: str = Field("flow", max_length=200)

    @field_validator("flow")
    @classmethod
    def _looks_like_a_flow(cls, flow: dict[str, Any]) -> dict[str, Any]:
        data = flow.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise ValueError("not a Langflow flow: expected {'data': {'nodes': [...], 'edges': [...]}}")
        return flow

    def preview(self) -> str:
        return f"flow {self.name!r}, {len(self.flow['data']['nodes'])} nodes, input {cut_short(self.input_value)!r}"


def build_flow_spec(flow_json: dict | str | Path, input_value: str = "", name: str | None = None) -> FlowSpec:
    """A validated flow spec from a flow's JSON (dict) or the path of its file."""
    if isinstance(flow_json, (str, Path)):
        path = Path(flow_json)
        try:
            flow_json = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise InvalidJob(f"cannot read flow {path}: {exc}") from exc
        if not isinstance(flow_json, dict):
            raise InvalidJob(f"flow {path} is not a Langflow flow: its JSON is not an object")
        name = name or str(flow_json.get("name") or path.stem)
    if not isinstance(flow_json, dict):
        raise InvalidJob(f"flow: give a flow's JSON (a dict) or the path of its file, not {type(flow_json).__name__}")
    return parse(FlowSpec, {"flow": flow_json, "input_value": input_value,
                            "name": name or str(flow_json.get("name") or "flow")})


class SummaryOptions(BaseModel):
    """What every provider call of one summary shares; the summary task's later messages carry only this."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # None: summarize.model from the configuration, else default_model
    flow: str | None = Field(None, max_length=200)
    max_tokens: int | None = Field(None, ge=1)  # of the final summary; chunk summaries use summarize.summary_tokens
    cache: bool = True  # passed on to every chunk and reduce job


class SummarizeSpec(SummaryOptions):
    """A long text to summarize: chunked, summarized in parallel, then reduced."""

    text: str

    @field_validator("text")
    @classmethod
    def _has_content(cls, text: str) -> str:
        if not clean_text(text):
            raise ValueError("the text to summarize is empty")
        return text

    def options(self) -> SummaryOptions:
        return SummaryOptions.model_validate(self.model_dump(exclude={"text"}))

    def preview(self, mask: Fold | None = None) -> str:
        """A short, safe description of the job for Flower and logs: never the whole text."""
        # Only the head is folded: the text may be megabytes long.
        return f"summarize {preview_head(self.text, mask)!r} ({len(self.text)} chars, model={self.model or 'default'})"


def build_summarize_spec(
    text: str, *, model: str | None = None, flow: str | None = None, max_tokens: int | None = None,
    cache: bool = True,
) -> SummarizeSpec:
    """A validated summary spec; a text that is not a string or holds nothing raises ``InvalidJob``."""
    if not isinstance(text, str):
        raise InvalidJob(f"text: give the text to summarize as a string, not {type(text).__name__}")
    return parse(SummarizeSpec, {"text": text, "model": model, "flow": flow, "max_tokens": max_tokens,
                                 "cache": cache})
