"""The provider interface: the few calls every cloud AI adapter offers, and what they return."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from flowcloud.workers.core.config import ProviderConfig


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass(frozen=True)
class Completion:
    """One generated text with what it cost in tokens."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    usage: Usage
    model: str


class Provider(ABC):
    """A cloud AI service reached over HTTP. Adapters translate every failure into ``ProviderError``."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def call_seconds(self) -> float:
        """The longest one call may take: what a flight or a lane's flusher lock must outlive."""
        return self.config.timeout.call_seconds

    @abstractmethod
    def chat(self, messages: list[dict], model: str, **params) -> Completion:
        """One conversation in, one assistant message out."""

    @abstractmethod
    def complete(self, prompts: list[str], model: str, **params) -> list[Completion]:
        """Legacy completions: several prompts in one call, one completion each, in order."""

    @abstractmethod
    def embed(self, inputs: list[str], model: str) -> Embeddings:
        """One vector per input, in order."""

    def cost(self, model: str, usage: Usage) -> float:
        """USD for ``usage`` at this provider's price for ``model`` (0 when unpriced)."""
        price = self.config.price(model)
        return price.cost(usage.prompt_tokens, usage.completion_tokens) if price else 0.0

    def close(self) -> None:
        """Release pooled connections."""
