"""What a provider says about its own rate limits, read from its reply's ``x-ratelimit-*`` headers.

OpenAI and the clouds that copy its API send, on every reply (a 429 included),
how many requests and tokens are left in its current window and when each
count resets, the reset as a duration (``1s``, ``6m0s``, ``250ms``) or plain
seconds. A header that is missing or unreadable is left out: it never loosens a limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
RESET_REQUESTS = "x-ratelimit-reset-requests"
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
RESET_TOKENS = "x-ratelimit-reset-tokens"

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# A reset further away than this is not a per-minute window's: it is not taken.
LONGEST_RESET_SECONDS = 3600.0


@dataclass(frozen=True)
class ProviderLimits:
    """Requests and tokens left at the provider, and seconds until each count resets (None: not said)."""

    requests: int | None = None
    requests_reset: float | None = None
    tokens: int | None = None
    tokens_reset: float | None = None

    @property
    def empty(self) -> bool:
        return self.requests is None and self.tokens is None


def read_headers(headers: Mapping[str, str]) -> ProviderLimits:
    """The limits ``headers`` state; a count is taken only with its reset, and a reset only with its count."""
    requests, requests_reset = pair(headers, REMAINING_REQUESTS, RESET_REQUESTS)
    tokens, tokens_reset = pair(headers, REMAINING_TOKENS, RESET_TOKENS)
    return ProviderLimits(requests, requests_reset, tokens, tokens_reset)


def pair(headers: Mapping[str, str], remaining: str, reset: str) -> tuple[int | None, float | None]:
    count, seconds = whole_number(headers.get(remaining)), duration(headers.get(reset))
    if count is None or seconds is None:
        return None, None
    return count, seconds


def whole_number(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def duration(value: str | None) -> float | None:
    """Seconds in ``6m0s``, ``1.5s``, ``250ms`` or ``2`` (seconds); None when unreadable or too long."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    return seconds if 0 <= seconds <= LONGEST_RESET_SECONDS else None
