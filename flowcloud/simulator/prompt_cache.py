"""Prompt caching as OpenAI does it: a recently seen prompt prefix is billed as cached input.

OpenAI caches the prefix of every chat prompt of at least ``MIN_CACHED_TOKENS``
tokens, in ``INCREMENT_TOKENS``-token steps, for a few minutes, per model; a
later prompt that starts with a cached prefix reports that many tokens in
``usage.prompt_tokens_details.cached_tokens``. The simulator counts a token as
``CHARS_PER_TOKEN`` characters, so a prefix is a run of characters here.
Nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import threading
import time

from .answers import CHARS_PER_TOKEN

MIN_CACHED_TOKENS = 1024
INCREMENT_TOKENS = 128
# OpenAI keeps a prefix 5-10 minutes after its last use; the low end, so tests cannot lean on luck.
TTL_SECONDS = 300.0
# Bounds the memory a long simulator run may hold: the oldest prefixes go first.
MAX_PREFIXES = 200_000
# Between two messages, so moving text from one message to the next changes the prefix.
MESSAGE_SEPARATOR = "\x1e"


class PromptCache:
    """The prefixes seen per model, each with when it was last used."""

    def __init__(self, ttl: float = TTL_SECONDS, clock=time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._seen: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def read_and_store(self, model: str, texts: list[str]) -> int:
        """The cached tokens of the prompt made of ``texts`` (0 below the minimum); its prefixes are cached
        from now on."""
        prefixes = prefix_digests(model, MESSAGE_SEPARATOR.join(texts))
        now = self.clock()
        with self._lock:
            cached = 0
            for tokens, digest in prefixes:
                if self._seen.get(digest, float("-inf")) + self.ttl < now:
                    break
                cached = tokens
            for _, digest in prefixes:
                self._seen.pop(digest, None)
                self._seen[digest] = now
            while len(self._seen) > MAX_PREFIXES:
                del self._seen[next(iter(self._seen))]
        return cached

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


def prefix_digests(model: str, prompt: str) -> list[tuple[int, bytes]]:
    """(tokens, digest) of each cacheable prefix of ``prompt``: 1024 tokens, then every 128 more."""
    digest = hashlib.sha256(model.encode("utf-8") + b"\0")
    boundaries = range(MIN_CACHED_TOKENS, len(prompt) // CHARS_PER_TOKEN + 1, INCREMENT_TOKENS)
    prefixes, start = [], 0
    for tokens in boundaries:
        end = tokens * CHARS_PER_TOKEN
        digest.update(prompt[start:end].encode("utf-8"))
        prefixes.append((tokens, digest.copy().digest()))
        start = end
    return prefixes
