"""What every HTTP adapter shares: its pool (guarded against SSRF), its timeouts, its keys, and the defensive reading of answers.

An adapter on ``PooledProvider`` says only what differs between APIs: its URLs,
how its key is sent (the ``auth_headers`` seam), its request bodies and how its
answers read. Sending and error translation stay in ``flowcloud.workers.providers.http``;
this module holds no API's shapes. Every request goes through ``keyed``: with the key its
``KeyPool`` gives, and again at once with the next one when the provider refuses that key
(``flowcloud.workers.core.secrets.keys``), so no job spends a retry on a rejected key.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from flowcloud.workers.core.config import ProviderConfig
from flowcloud.workers.core.errors import AuthenticationFailed, MalformedResponse, RateLimited
from flowcloud.workers.core.secrets import Key, KeyPool
from flowcloud.workers.core.ssrf import Guard
from flowcloud.workers.providers.base import Provider, Usage
from flowcloud.workers.providers.http import json_object, make_pool, post_json, send

T = TypeVar("T")


class PooledProvider(Provider):
    """A provider reached over pooled HTTP connections, sized to the worker's concurrency."""

    def __init__(self, config: ProviderConfig, pool_size: int, keys: KeyPool | None = None) -> None:
        super().__init__(config)
        self.keys = keys if keys is not None else KeyPool.for_provider(config)
        self._pool = make_pool(pool_size, config.base_url, Guard(config.name, allow_private=config.allow_private))
        self._timeout = (config.timeout.connect, config.timeout.read)

    def close(self) -> None:
        self._pool.clear()

    # -- sending

    def auth_headers(self, key: str) -> dict[str, str]:
        """How the API takes its key; OpenAI's bearer token unless an adapter says otherwise."""
        return {"Authorization": f"Bearer {key}"}

    def headers(self, key: Key | None) -> dict[str, str]:
        """The configured headers plus ``key`` as the API takes it."""
        headers = dict(self.config.headers)
        if key is not None:
            headers.update(self.auth_headers(key.secret))
        return headers

    def keyed(self, send: Callable[[dict[str, str]], T]) -> T:
        """``send(headers)`` with the pool's key; refused with a 401 or a 429, again with the next key the
        pool gives, until it gives none: then the last refusal stands."""
        key = self.keys.first()
        tried: set[str] = set()
        while True:
            try:
                return send(self.headers(key))
            except (AuthenticationFailed, RateLimited) as exc:
                following = self.keys.next_after(key, exc, tried) if key is not None else None
                if following is None:
                    if isinstance(exc, AuthenticationFailed):
                        raise self.rejected(key, exc) from exc
                    raise
                key = following

    def rejected(self, key: Key | None, error: AuthenticationFailed) -> AuthenticationFailed:
        """A 401 that names the key by its reference and fingerprint."""
        if key is None:
            what = "the request (401): it carries no key; give api_key, api_keys or api_key_env"
        else:
            what = f"the API key {key.fingerprint} from {key.origin} (401): check that key"
        return AuthenticationFailed(f"{self.name} rejected {what}", provider=self.name, status=error.status,
                                    request_id=error.request_id)

    def post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` as JSON: the decoded answer, or a classified ``ProviderError``."""
        return self.keyed(lambda headers: post_json(self._pool, url, payload, provider=self.name, headers=headers,
                                                    timeout=self._timeout))

    def get(self, url: str) -> dict[str, Any]:
        """GET ``url``: the decoded answer, or a classified ``ProviderError``."""
        reply = self.keyed(lambda headers: send(self._pool, "GET", url, provider=self.name, headers=headers,
                                                timeout=self._timeout))
        return json_object(reply, self.name)

    # -- reading answers defensively: a provider's garbage is a MalformedResponse, never a crash

    def text_at(self, obj: dict, *path: str, default: str) -> str:
        """The text at ``path`` in ``obj``; ``default`` when it is absent."""
        for key in path:
            obj = obj.get(key) if isinstance(obj, dict) else None
        if obj is None:
            return default
        if not isinstance(obj, str):
            raise self.malformed(f"{'.'.join(path)} is not text")
        return obj

    def token_counts(self, body: dict, prompt: tuple[str, ...], completion: str,
                     cached: tuple[tuple[str, ...], ...] = ()) -> Usage:
        """``body["usage"]`` as a ``Usage``: the sum of the ``prompt`` counts, the ``completion`` count, and
        the cached input tokens at the first of the ``cached`` paths the answer has (none: 0)."""
        usage = body.get("usage") or {}
        try:
            counts = Usage(sum(token_count(usage.get(name)) for name in prompt), token_count(usage.get(completion)),
                           _first_count(usage, cached))
        except (TypeError, ValueError, AttributeError) as exc:
            raise self.malformed("usage is not a set of token counts") from exc
        if not 0 <= counts.cached_tokens <= counts.prompt_tokens:
            raise self.malformed(f"usage says {counts.cached_tokens} cached of {counts.prompt_tokens} prompt tokens")
        return counts

    def listed(self, body: dict, key: str = "data") -> list[dict]:
        """The entries of a list answer (``{"data": [{...}, ...]}``) that name an ``id``; others are skipped."""
        entries = body.get(key)
        if not isinstance(entries, list):
            raise self.malformed(f"{key} is not a list")
        return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)]

    def malformed(self, what: str) -> MalformedResponse:
        return MalformedResponse(f"{self.name} sent an unreadable answer: {what}", provider=self.name)


def as_date(value: object) -> str | None:
    """A date an API gives as text or as Unix seconds, as text (``2026-01-31``); None when it gives none
    (or a number no calendar holds)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, timezone.utc).date().isoformat()
        except (OverflowError, OSError, ValueError):
            return None
    return None


def optional_text(value: object) -> str | None:
    """``value`` when it is text, else None: an answer's id, model or reason of another type is left out,
    never passed on to records and metrics that expect text."""
    return value if isinstance(value, str) else None


def token_count(value: object) -> int:
    """A token count as an API gives it (absent: 0); ``ValueError`` for anything but a whole number >= 0
    (a count in a string, or a float that is whole, as some compatible servers send them, is read)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a token count")
    number = float(value) if isinstance(value, (float, str)) else value
    if not (isinstance(number, int) or (math.isfinite(number) and number.is_integer())) or number < 0:
        raise ValueError(f"{value!r} is not a token count")
    return int(number)


def _first_count(usage: dict, paths: tuple[tuple[str, ...], ...]) -> int:
    """The count at the first of ``paths`` present in ``usage``; 0 when none is."""
    for path in paths:
        value: Any = usage
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return token_count(value)
    return 0
