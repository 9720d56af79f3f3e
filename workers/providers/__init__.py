"""The adapter layer: one class per provider API, chosen by a provider's ``kind``.

Provider HTTP lives only here. Everything above it sees ``Provider`` (what it can do is its
``capabilities``) and ``ProviderError``, and never imports a concrete adapter.
"""

from __future__ import annotations

from typing import Callable

from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.secrets import KeyPool
from flowcloud.workers.providers.anthropic import AnthropicProvider
from flowcloud.workers.providers.azure import AzureOpenAIProvider
from flowcloud.workers.providers.base import Capability, Completion, Embeddings, Provider, ServedModel, Usage
from flowcloud.workers.providers.in_process import SentenceEncoderProvider
from flowcloud.workers.providers.openai import OpenAIProvider

# An adapter is built from its provider's configuration, the worker's pool size and its keys.
ADAPTERS: dict[str, Callable[[ProviderConfig, int, KeyPool | None], Provider]] = {
    "openai": OpenAIProvider,
    "simulator": OpenAIProvider,  # the simulator speaks the OpenAI API (and Anthropic's, and Azure's)
    "anthropic": AnthropicProvider,
    "azure": AzureOpenAIProvider,
    "sentence_encoder": SentenceEncoderProvider,  # in-process: no HTTP
}


def build_provider(config: ProviderConfig, pool_size: int, keys: KeyPool | None = None) -> Provider:
    """The adapter for ``config``; ``keys`` default to a pool of its own, its cooldowns kept in this process."""
    return ADAPTERS[config.kind](config, pool_size, keys)


__all__ = ["ADAPTERS", "Capability", "Completion", "Embeddings", "Provider", "ServedModel", "Usage", "build_provider"]
