"""When to try a failed provider call again: small pure functions, no I/O, no clock of their own.

A retry is never a sleep inside the worker: the task turns the delay chosen here
into a Celery countdown, so a waiting job holds no worker slot.
"""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping

from flowcloud.workers.core.config import RetryPolicy
from flowcloud.workers.core.errors import ProviderError

# A countdown message sits unacked in a worker's memory; on Redis it is delivered
# again if it outlives the visibility timeout. Longer waits are split into hops.
COUNTDOWN_SHARE_OF_VISIBILITY = 0.5


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, ``retry-after`` seconds or HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass  # fall through to retry-after, as openai-python does
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1)))."""
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    return rand() * ceiling


def retry_delay(
    error: ProviderError,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt, or None when the job should fail now.

    ``attempt`` is the number of the call that just failed (1 for the first).
    The delay is never shorter than the provider's Retry-After.
    """
    if not error.retryable or attempt >= policy.max_attempts:
        return None
    if error.retry_after is not None and error.retry_after > policy.max_retry_after:
        return None  # a quota that resets tomorrow: better a clear failure now than a job parked for a day
    return max(error.retry_after or 0.0, backoff_delay(attempt, policy, rand))


def countdown_hop(delay: float, visibility_timeout: int) -> float:
    """The part of ``delay`` one countdown message may wait without being redelivered."""
    return min(delay, visibility_timeout * COUNTDOWN_SHARE_OF_VISIBILITY)
