"""The adapter layer: one class per provider API, chosen by a provider's ``kind``.

Provider HTTP lives only here. Everything above it sees ``Provider`` and ``ProviderError``.
"""

from __future__ import annotations

from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.providers.base import Completion, Embeddings, Provider, Usage
from flowcloud.workers.providers.openai import OpenAIProvider

ADAPTERS: dict[str, type[OpenAIProvider]] = {
    "openai": OpenAIProvider,
    "simulator": OpenAIProvider,  # the simulator speaks the OpenAI API
}


def build_provider(config: ProviderConfig, pool_size: int) -> Provider:
    return ADAPTERS[config.kind](config, pool_size)


__all__ = ["ADAPTERS", "Completion", "Embeddings", "Provider", "Usage", "build_provider"]
