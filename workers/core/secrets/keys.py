"""A provider's keys, in the order configured: which one a call uses, and what happens when it is refused.

A call asks ``first`` for its key and sends it. Refused with a 401 or a 429, it hands the key to
``next_after``, which first asks the key's source again (a key just rotated in the store is read
at once and tried), then sets the key aside for a while (a 401 for ``key_cooldown_seconds``, a
429 for its Retry-After) and gives the next key not set aside, or None: then the call's error
stands and the job's retry policy decides, as with one key. Cooldowns are shared by every
worker through ``Cooldowns`` in Redis, read again at most every ``COOLDOWN_SYNC_SECONDS``;
a provider with one key keeps none, having nothing to move on to.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from flowcloud.workers.core.errors import AuthenticationFailed, KeyUnavailable, ProviderError
from flowcloud.workers.core.secrets.cooldowns import Cooldowns
from flowcloud.workers.core.secrets.refs import SecretRef
from flowcloud.workers.core.secrets.sources import Source, Sources

if TYPE_CHECKING:
    import redis

    from flowcloud.workers.core.config_sections import ProviderConfig, VaultSettings

log = logging.getLogger(__name__)
FINGERPRINT_KEY = b"flowcloud key fingerprint"
COOLDOWN_SYNC_SECONDS = 1.0
# A 429 that names no Retry-After sets its key aside this long.
RATE_LIMITED_COOLDOWN = 10.0


@functools.lru_cache(maxsize=256)  # asked on every call: a provider's few keys are hashed once each
def fingerprint(provider: str, secret: str) -> str:
    """8 hex digits naming ``secret`` in logs, Redis and ``config check``: a keyed hash, cut short,
    from which the key cannot be told, that differs between providers."""
    digest = hmac.new(FINGERPRINT_KEY, f"{provider}\0{secret}".encode(), hashlib.sha256).hexdigest()
    return digest[:8]


@dataclass(frozen=True)
class Key:
    """A key as read now: its value (never shown), its fingerprint and the reference it came from."""

    secret: str = field(repr=False)
    fingerprint: str
    ref: SecretRef
    origin: str  # how the configuration names it, for messages: "env:OPENAI_KEY", "api_key_env OPENAI_KEY"


class KeyPool:
    def __init__(self, provider: str, refs: list[tuple[SecretRef, str]], sources: Sources,
                 cooldowns: Cooldowns | None = None, cooldown_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.origins = [origin for _, origin in refs]
        self.sources: list[Source] = [sources.source(ref) for ref, _ in refs]
        self.cooldowns = cooldowns if len(refs) > 1 else None
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self._until: dict[str, float] = {}  # fingerprint -> when its cooldown ends, on self.clock
        self._synced_at = -float("inf")
        self._lock = threading.Lock()
        self._unreadable_told: frozenset[str] = frozenset()  # the references last logged as unreadable
        self._last: dict[int, Key] = {}  # each source's key as last read: asked for on every call

    @classmethod
    def for_provider(cls, config: ProviderConfig, vault: VaultSettings | None = None,
                     client: redis.Redis | None = None) -> KeyPool:
        """The pool of ``config``'s keys; cooldowns shared through ``client`` when given."""
        cooldowns = Cooldowns(client, config.name) if client is not None else None
        return cls(config.name, config.key_refs(), Sources(config.name, vault), cooldowns,
                   config.key_cooldown_seconds)

    def __len__(self) -> int:
        return len(self.sources)

    def first(self) -> Key | None:
        """The key a call should use: the first one not set aside, else the one free soonest; None if
        the provider has no key. ``KeyUnavailable`` when none of its keys can be read."""
        if not self.sources:
            return None
        keys, unreadable = self._readable()
        if not keys:
            raise unreadable[0]
        if len(keys) == 1:
            return keys[0]
        cooling = self._cooling()
        free = [key for key in keys if key.fingerprint not in cooling]
        return free[0] if free else min(keys, key=lambda key: cooling[key.fingerprint])

    def next_after(self, refused: Key, error: ProviderError, tried: set[str]) -> Key | None:
        """The key to try after ``refused`` met ``error`` (a 401 or a 429) on this call, or None."""
        tried.add(refused.fingerprint)
        if isinstance(error, AuthenticationFailed):
            renewed = self._read_again(refused)
            if renewed is not None and renewed.fingerprint not in tried:
                return renewed
        if self.cooldowns is None:
            return None
        seconds = self.cooldown_seconds if isinstance(error, AuthenticationFailed) else (
            error.retry_after or RATE_LIMITED_COOLDOWN)
        self._set_aside(refused, seconds, error.status)
        keys, _ = self._readable()
        cooling = self._cooling()
        return next((key for key in keys if key.fingerprint not in tried and key.fingerprint not in cooling), None)

    def describe(self) -> list[dict]:
        """Each key's reference, whether it can be read now and its fingerprint: for ``config check``."""
        described = []
        for source, origin in zip(self.sources, self.origins):
            try:
                described.append({"key": origin, "fingerprint": fingerprint(self.provider, source.read())})
            except KeyUnavailable as exc:
                described.append({"key": origin, "unavailable": str(exc)})
        return described

    # -- reading

    def _readable(self) -> tuple[list[Key], list[KeyUnavailable]]:
        keys, unreadable = [], []
        for index, source in enumerate(self.sources):
            try:
                keys.append(self._key(index, source.read()))
            except KeyUnavailable as exc:
                unreadable.append(exc)
        told = frozenset(str(exc) for exc in unreadable) if unreadable or self._unreadable_told else frozenset()
        if told != self._unreadable_told:  # said once, not on every call
            self._unreadable_told = told
            for exc in unreadable:
                log.warning("%s%s", exc, "; the provider's other keys are used" if keys else "")
        return keys, unreadable

    def _read_again(self, refused: Key) -> Key | None:
        index = next(i for i, source in enumerate(self.sources) if source.ref == refused.ref)
        try:
            secret = self.sources[index].read(refused=refused.secret)
        except KeyUnavailable:
            return None
        return self._key(index, secret)

    def _key(self, index: int, secret: str) -> Key:
        last = self._last.get(index)
        if last is None or last.secret != secret:
            last = self._last[index] = Key(secret, fingerprint(self.provider, secret), self.sources[index].ref,
                                           self.origins[index])
        return last

    # -- cooldowns

    def _cooling(self) -> dict[str, float]:
        """Seconds left of each key set aside, from this process's view, read again from Redis when old."""
        now = self.clock()
        if self.cooldowns is not None and now - self._synced_at >= COOLDOWN_SYNC_SECONDS:
            # Marked read only once the read is done: a thread arriving meanwhile waits for it on the
            # lock rather than go on with a view that does not know the keys set aside yet.
            with self._lock:
                if self.clock() - self._synced_at >= COOLDOWN_SYNC_SECONDS:
                    keys, _ = self._readable()
                    shared = self.cooldowns.remaining(key.fingerprint for key in keys)
                    if shared is not None:
                        self._until = {fp: now + left for fp, left in shared.items()}
                    self._synced_at = now
        return {fp: until - now for fp, until in self._until.items() if until > now}

    def _set_aside(self, key: Key, seconds: float, status: int | None) -> None:
        log.warning("%s: key %s (%s) refused with %s; set aside for %g s", self.provider, key.fingerprint,
                    key.origin, status, seconds)
        self._until[key.fingerprint] = self.clock() + seconds
        if self.cooldowns is not None:
            self.cooldowns.set_aside(key.fingerprint, seconds, status)
