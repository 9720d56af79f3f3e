"""The provider interface: the few calls a cloud AI adapter may offer, what they return, and how to ask
an adapter which of them it offers.

Every adapter is a ``Provider``. What it can do is its ``capabilities``: chat,
legacy completions over a list of prompts, embeddings, the Batch API and the list
of the models it serves; what one provider offers is those its configuration's
``endpoints`` list (all, unless it lists them: a preset does, so a DeepSeek
provider offers no embeddings), and the model list whatever they list. A call
it does not offer raises ``Unsupported`` (an ``InvalidJob``), never
``AttributeError``, so a caller either checks ``supports`` first or lets the
job fail with a message a person can act on. An adapter that claims a
capability without implementing its method, or inherits one it does not claim,
is refused when its class is defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.errors import Unsupported

if TYPE_CHECKING:
    from flowcloud.workers.providers.batch_api import BatchAPI


@dataclass(frozen=True)
class Usage:
    """Tokens one call spent; ``cached_tokens`` are the part of ``prompt_tokens`` the provider served from
    its prompt cache, billed at the model's cached input price."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens)

    def as_dict(self) -> dict[str, int]:
        counts = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        return {**counts, "cached_tokens": self.cached_tokens} if self.cached_tokens else counts


@dataclass(frozen=True)
class Completion:
    """One generated text with what it cost in tokens."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class ServedModel:
    """A model the provider says it serves; ``deprecated`` when its API marks it so, with the date when it says.

    ``aliases`` are other names that reach it (Anthropic's ``claude-sonnet-4-5`` for a dated snapshot).
    """

    id: str
    deprecated: bool = False
    deprecation_date: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    usage: Usage
    model: str


class Capability(str, Enum):
    """Something an adapter may offer, named by the ``Provider`` method that does it."""

    CHAT = "chat"
    COMPLETIONS = "complete"  # legacy completions: several prompts in one call
    EMBEDDINGS = "embed"
    BATCH_API = "batch_api"
    MODELS = "models"  # the list of the models the provider serves

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self]

    @property
    def endpoint(self) -> str | None:
        """Its name in a provider's ``endpoints`` setting; None when that setting does not cover it."""
        return ENDPOINTS[self]


DESCRIPTIONS = {
    Capability.CHAT: "chat completions",
    Capability.COMPLETIONS: "legacy completions (a list of prompts in one call)",
    Capability.EMBEDDINGS: "embeddings",
    Capability.BATCH_API: "Batch API",
    Capability.MODELS: "a list of its models",
}
ENDPOINTS = {
    Capability.CHAT: "chat",
    Capability.COMPLETIONS: "completions",
    Capability.EMBEDDINGS: "embeddings",
    Capability.BATCH_API: "batch_api",
    Capability.MODELS: None,  # no job goes to it: a provider that lists its models offers the list
}


class Provider:
    """A cloud AI service reached over HTTP. Adapters translate every failure into ``ProviderError``."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for capability in Capability:
            method = capability.value
            implemented = getattr(cls, method) is not getattr(Provider, method)
            if implemented and capability not in cls.capabilities:
                raise TypeError(f"{cls.__name__}.{method} is implemented or inherited but {capability.name} is not "
                                f"in capabilities: list it, or refuse it with {method} = Provider.{method}")
            if capability in cls.capabilities and not implemented:
                raise TypeError(f"{cls.__name__} lists {capability.name} in capabilities but has no {method}")

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.offered = frozenset(c for c in self.capabilities if c.endpoint is None or config.serves(c.endpoint))
        for capability in self.capabilities - self.offered:
            # The service does not serve it (DeepSeek has no embeddings): refused as if the adapter lacked it.
            setattr(self, capability.value, getattr(Provider, capability.value).__get__(self))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def call_seconds(self) -> float:
        """The longest one call may take: what a flight or a lane's flusher lock must outlive."""
        return self.config.timeout.call_seconds

    def supports(self, capability: Capability) -> bool:
        return capability in self.offered

    def unsupported(self, capability: Capability) -> Unsupported:
        return Unsupported(self.name, capability.value, capability.description)

    def chat(self, messages: list[dict], model: str, **params) -> Completion:
        """One conversation in, one assistant message out."""
        raise self.unsupported(Capability.CHAT)

    def complete(self, prompts: list[str], model: str, **params) -> list[Completion]:
        """Legacy completions: several prompts in one call, one completion each, in order."""
        raise self.unsupported(Capability.COMPLETIONS)

    def embed(self, inputs: list[str], model: str) -> Embeddings:
        """One vector per input, in order."""
        raise self.unsupported(Capability.EMBEDDINGS)

    def batch_api(self) -> BatchAPI:
        """The provider's Batch API: many requests sent as one file, answered within hours, at a lower price."""
        raise self.unsupported(Capability.BATCH_API)

    def models(self) -> list[ServedModel]:
        """The models the provider serves now, as its API lists them."""
        raise self.unsupported(Capability.MODELS)

    def split_usage(self, total: Usage, parts: int) -> list[Usage]:
        """One batched call's usage as ``parts`` per-prompt shares that add up to the total.

        Providers report usage for the whole call; an adapter whose API reports it per input overrides this.
        """
        prompt, completion = _shares(total.prompt_tokens, parts), _shares(total.completion_tokens, parts)
        cached = _shares(total.cached_tokens, parts)
        return [Usage(p, c, min(k, p)) for p, c, k in zip(prompt, completion, cached)]

    def cost(self, model: str, usage: Usage) -> float:
        """USD for ``usage`` at this provider's price for ``model`` (0 when unpriced), cached input at its price."""
        price = self.config.price(model)
        return price.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) if price else 0.0

    def close(self) -> None:
        """Release pooled connections."""


def _shares(count: int, parts: int) -> list[int]:
    base, extra = divmod(count, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
