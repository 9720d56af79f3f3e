"""Builds each provider once per process, and names the one that serves a model by default (its group's
first deployment; the route stage may choose another)."""

from __future__ import annotations

import threading

import redis

from flowcloud.workers.core.config import Config
from flowcloud.workers.core.secrets import KeyPool
from flowcloud.workers.providers import Provider, build_provider


class Router:
    def __init__(self, config: Config, pool_size: int, client: redis.Redis | None = None) -> None:
        self.config = config
        self.pool_size = pool_size
        self.client = client  # where the providers' key cooldowns are shared; None: this process only
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def route(self, model: str | None) -> tuple[Provider, str]:
        """The provider for ``model`` (the default model when None) and the model name to send: a
        group's first deployment; ``InvalidJob`` when no provider serves it."""
        first = self.config.group(model or self.config.default_model).deployments[0]
        return self.provider(first.provider), first.model

    def provider(self, name: str) -> Provider:
        with self._lock:
            if name not in self._providers:
                entry = self.config.provider(name)
                keys = KeyPool.for_provider(entry, self.config.vault, self.client)
                self._providers[name] = build_provider(entry, self.pool_size, keys)
            return self._providers[name]

    def close(self) -> None:
        with self._lock:
            for provider in self._providers.values():
                provider.close()
            self._providers.clear()
