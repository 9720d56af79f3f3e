"""Input limits: how large one submission may be, globally and per flow (the ``limits`` section).

The client checks every spec here before anything of it enters Redis, and the
worker checks each job again when it reads it, because a message may come from
an older or a foreign client. Both raise the same ``LimitExceeded``, naming the
limit, the value and the setting that sets it. Pure: lengths and counts of
specs already parsed; no Redis, no Celery, and nothing above the foundation.

    limits:
      prompt_chars: 1000000          # characters of all a job's messages (or the text it embeds)
      messages: 1000                 # messages in one completion job
      batch: 10000                   # jobs in one submit_many or embed call (and one bundle)
      max_tokens: null               # a job's max_tokens; null: the model's context window
      summary_chars: 10000000        # characters of one text to summarize
      flows:
        nightly: {prompt_chars: 20000, batch: 100}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal

from pydantic import Field

from flowcloud.workers.core.config_sections import Strict
from flowcloud.workers.core.errors import InvalidJob, LimitExceeded

if TYPE_CHECKING:
    from flowcloud.workers.core.config import Config
    from flowcloud.workers.core.jobspec import CompletionSpec, EmbeddingSpec, SummarizeSpec

LimitName = Literal["prompt_chars", "messages", "batch", "max_tokens", "summary_chars"]
SECTION = "limits"


class FlowLimits(Strict):
    """One flow's own limits; a limit left out is the global one."""

    prompt_chars: int | None = Field(None, ge=1)
    messages: int | None = Field(None, ge=1)
    batch: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    summary_chars: int | None = Field(None, ge=1)


class LimitSettings(Strict):
    """The ``limits`` section: generous, but never unbounded."""

    prompt_chars: int = Field(1_000_000, ge=1, description="characters of all a job's messages, or of the text "
                                                           "it embeds")
    messages: int = Field(1_000, ge=1, description="messages in one completion job")
    batch: int = Field(10_000, ge=1, description="jobs in one submit_many or embed call, and in one bundle")
    max_tokens: int | None = Field(None, ge=1, description="a job's max_tokens; null: its model's context window "
                                                           "(context_tokens), which bounds it in any case")
    summary_chars: int = Field(10_000_000, ge=1, description="characters of one text to summarize")
    flows: dict[str, FlowLimits] = Field(default_factory=dict, description="per flow: limits of its own")

    def limit(self, name: LimitName, flow: str | None) -> Limit | None:
        """The limit ``name`` for jobs of ``flow``: the flow's own when it sets one, else the global one
        (None: no limit of this section's, which only ``max_tokens`` can be)."""
        own = self.flows.get(flow) if flow is not None else None
        if own is not None and getattr(own, name) is not None:
            return Limit(name, getattr(own, name), f"{SECTION}.flows.{flow}.{name}")
        value = getattr(self, name)
        return Limit(name, value, f"{SECTION}.{name}") if value is not None else None


@dataclass(frozen=True)
class Limit:
    name: LimitName
    maximum: int
    field: str  # the setting that sets it, as a dotted path
    fix: str | None = None  # what to do instead, when raising the setting is not the answer

    def check(self, value: int, what: str) -> None:
        """Raise ``LimitExceeded`` if ``value`` is over the limit; ``what`` says what it counts, with a
        ``{}`` where the value goes ("the prompt has {} characters")."""
        if value > self.maximum:
            raise LimitExceeded(self.name, value=value, maximum=self.maximum, field=self.field,
                                what=what.format(f"{value:,}"), fix=self.fix)


def check_completion(config: Config, spec: CompletionSpec) -> None:
    """Raise ``LimitExceeded`` if the completion ``spec`` is over a limit of its flow."""
    settings = config.limits
    settings.limit("messages", spec.flow).check(len(spec.messages), "the job has {} messages")
    chars = sum(len(message.content) for message in spec.messages)
    settings.limit("prompt_chars", spec.flow).check(chars, "the prompt has {} characters")
    check_max_tokens(config, spec.max_tokens, spec.model, spec.flow)


def check_embedding(config: Config, spec: EmbeddingSpec) -> None:
    config.limits.limit("prompt_chars", spec.flow).check(len(spec.input), "the text to embed has {} characters")


def check_summary(config: Config, spec: SummarizeSpec) -> None:
    """The text's length, and the final summary's ``max_tokens`` within the window of the model it runs on."""
    config.limits.limit("summary_chars", spec.flow).check(len(spec.text), "the text to summarize has {} characters")
    check_max_tokens(config, spec.max_tokens, spec.model or config.summarize.model, spec.flow)


def check_spec(config: Config, spec: CompletionSpec | EmbeddingSpec) -> None:
    """Either kind of job spec, as the worker reads it."""
    if hasattr(spec, "messages"):
        check_completion(config, spec)
    else:
        check_embedding(config, spec)


def check_batch(config: Config, count: int, flows: Iterable[object]) -> None:
    """Raise ``LimitExceeded`` if ``count`` jobs at once are more than the strictest batch limit of
    ``flows`` (those of the jobs; a value that is not a flow name counts as none)."""
    limits = [config.limits.limit("batch", flow if isinstance(flow, str) else None) for flow in flows]
    strictest = min(limits, key=lambda limit: limit.maximum, default=None)
    if strictest is not None:
        strictest.check(count, "{} jobs were sent at once")


def check_max_tokens(config: Config, max_tokens: int | None, model: str | None, flow: str | None) -> None:
    if max_tokens is None:
        return
    bound = window(config, model or config.default_model)
    configured = config.limits.limit("max_tokens", flow)
    if configured is not None and (bound is None or configured.maximum <= bound.maximum):
        bound = configured
    if bound is not None:
        bound.check(max_tokens, "max_tokens is {}")


def window(config: Config, model: str) -> Limit | None:
    """The context window of the entry serving ``model`` (a group's first deployment), as a limit named
    by its setting; None for a model no provider serves (checked elsewhere, with its own error)."""
    try:
        provider, entry = config.serving(model)
    except InvalidJob:
        return None
    where = f"providers.{config.providers.index(provider)}.models.{provider.models.index(entry)}.context_tokens"
    return Limit("max_tokens", entry.context_tokens, where,
                 fix=f"ask for fewer: no answer of {entry.name!r} is longer than its context window")
