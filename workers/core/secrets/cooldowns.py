"""Keys set aside after a provider refused them, shared by every worker process through Redis.

Owns ``flowcloud:keycooldown:<provider>:<fingerprint>``: one string per key set aside, expiring
when its cooldown ends, its value the status that set it aside (401, 429). A key is named by its
fingerprint only. Redis failing here never fails a call: the process keeps its own view.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # redis-py is imported with the first cooldown: configuration alone does not pay for it
    import redis

log = logging.getLogger(__name__)
PREFIX = "flowcloud:keycooldown:"


class Cooldowns:
    def __init__(self, client: redis.Redis, provider: str) -> None:
        self.client = client
        self.provider = provider

    def key(self, fingerprint: str) -> str:
        return f"{PREFIX}{self.provider}:{fingerprint}"

    def set_aside(self, fingerprint: str, seconds: float, status: int | None) -> None:
        try:
            self.client.set(self.key(fingerprint), str(status or ""), px=max(1, int(seconds * 1000)))
        except _redis_error() as exc:
            log.warning("%s: could not share the cooldown of key %s (%s)", self.provider, fingerprint,
                        type(exc).__name__)

    def remaining(self, fingerprints: Iterable[str]) -> dict[str, float] | None:
        """Seconds left of each listed key's cooldown, for those set aside; None if Redis did not answer."""
        fingerprints = list(fingerprints)
        try:
            pipe = self.client.pipeline(transaction=False)
            for fingerprint in fingerprints:
                pipe.pttl(self.key(fingerprint))
            left = pipe.execute()
        except _redis_error() as exc:
            log.warning("%s: could not read the keys' cooldowns (%s)", self.provider, type(exc).__name__)
            return None
        return {fp: ms / 1000 for fp, ms in zip(fingerprints, left) if isinstance(ms, int) and ms > 0}


def _redis_error() -> type[Exception]:
    from redis import RedisError

    return RedisError
