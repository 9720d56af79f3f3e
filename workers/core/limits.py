"""Input limits: how large one submission may be, globally and per flow (the ``limits`` section).

The client checks every spec here before anything of it enters Redis, and the
worker checks each job again when it reads it, because a message may come from
an older or a foreign client. Both raise the same ``LimitExceeded``, naming the
limit, the value and the setting that sets it. Pure: lengths and counts of
specs already parsed; no Redis, no Celery, and nothing above the foundation.

    limits:
      prompt_chars: 1000000          # characters of all a job's messages (or the text it embeds, or a flow's input)
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
    from flowcloud.workers.core.jobspec import CompletionSpec, EmbeddingSpec, FlowSpec, SummarizeSpec

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

    prompt_chars: int = Field(1_000_000, ge=1, description="characters of all a job's messages, of the text "
                                                           "it embeds, or of a flow's input")
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


class Checker:
    """The limits of one configuration, each resolved once per flow (and a window once per model), so a
    batch of 10,000 specs pays for one lookup, not 10,000. Its methods raise ``LimitExceeded``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._limits: dict[tuple[str, str | None], Limit | None] = {}
        self._output: dict[tuple[str, str | None], Limit | None] = {}

    def limit(self, name: LimitName, flow: str | None) -> Limit | None:
        key = (name, flow)
        if key not in self._limits:
            self._limits[key] = self.config.limits.limit(name, flow)
        return self._limits[key]

    def completion(self, spec: CompletionSpec) -> None:
        self.limit("messages", spec.flow).check(len(spec.messages), "the job has {} messages")
        chars = sum(len(message.content) for message in spec.messages)
        self.limit("prompt_chars", spec.flow).check(chars, "the prompt has {} characters")
        self.max_tokens(spec.max_tokens, spec.model, spec.flow)

    def embedding(self, spec: EmbeddingSpec) -> None:
        self.limit("prompt_chars", spec.flow).check(len(spec.input), "the text to embed has {} characters")

    def summary(self, spec: SummarizeSpec) -> None:
        """The text's length, and the final summary's ``max_tokens`` within the window of the model it runs on."""
        self.limit("summary_chars", spec.flow).check(len(spec.text), "the text to summarize has {} characters")
        self.max_tokens(spec.max_tokens, spec.model or self.config.summarize.model, spec.flow)

    def flow_run(self, spec: FlowSpec) -> None:
        """A whole flow's chat input, as a prompt of the flow it names."""
        self.limit("prompt_chars", spec.name).check(len(spec.input_value), "the flow's input has {} characters")

    def spec(self, spec: CompletionSpec | EmbeddingSpec) -> None:
        """Either kind of job spec, as the worker reads it."""
        if hasattr(spec, "messages"):
            self.completion(spec)
        else:
            self.embedding(spec)

    def batch(self, count: int, flows: Iterable[object]) -> None:
        """``count`` jobs at once within the strictest batch limit of ``flows`` (those of the jobs; a value
        that is not a flow name counts as none)."""
        limits = [self.limit("batch", flow if isinstance(flow, str) else None) for flow in flows]
        strictest = min(limits, key=lambda limit: limit.maximum, default=None)
        if strictest is not None:
            strictest.check(count, "{} jobs were sent at once")

    def max_tokens(self, max_tokens: int | None, model: str | None, flow: str | None) -> None:
        if max_tokens is None:
            return
        key = (model or self.config.default_model, flow)
        if key not in self._output:
            self._output[key] = self._output_bound(*key)
        if self._output[key] is not None:
            self._output[key].check(max_tokens, "max_tokens is {}")

    def _output_bound(self, model: str, flow: str | None) -> Limit | None:
        """The lower of the configured max_tokens limit and the model's window; on a tie, the setting."""
        bound, configured = window(self.config, model), self.limit("max_tokens", flow)
        if configured is not None and (bound is None or configured.maximum <= bound.maximum):
            return configured
        return bound


def check_spec(config: Config, spec: CompletionSpec | EmbeddingSpec) -> None:
    Checker(config).spec(spec)


def check_summary(config: Config, spec: SummarizeSpec) -> None:
    Checker(config).summary(spec)


def check_flow_run(config: Config, spec: FlowSpec) -> None:
    Checker(config).flow_run(spec)


def check_batch(config: Config, count: int, flows: Iterable[object]) -> None:
    Checker(config).batch(count, flows)


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
