"""The retry policy's small pure functions, with a frozen clock and fixed randomness."""

from email.utils import formatdate

import pytest

from flowcloud.workers.core.config import RetryPolicy
from flowcloud.workers.core.errors import AuthenticationFailed, MalformedResponse, ProviderTimeout, RateLimited, ServerError
from flowcloud.workers.core.retry import backoff_delay, countdown_hop, parse_retry_after, retry_delay

NOW = 1_800_000_000.0
POLICY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "250", "retry-after": "3"}, 0.25),
        ({"retry-after": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "soon"}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)])
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt, ceiling):
    assert backoff_delay(attempt, POLICY, rand=lambda: 0.0) == 0.0
    assert backoff_delay(attempt, POLICY, rand=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)


def error(cls, retry_after=None):
    return cls("x", provider="p", status=None, retry_after=retry_after)


@pytest.mark.parametrize("cls", [RateLimited, ServerError, ProviderTimeout, MalformedResponse])
def test_retryable_errors_get_a_delay(cls):
    assert retry_delay(error(cls), 1, POLICY, rand=lambda: 0.5) == 0.25


def test_permanent_errors_fail_at_once():
    assert retry_delay(error(AuthenticationFailed), 1, POLICY) is None


def test_attempts_are_bounded():
    assert retry_delay(error(ServerError), POLICY.max_attempts - 1, POLICY) is not None
    assert retry_delay(error(ServerError), POLICY.max_attempts, POLICY) is None


def test_never_earlier_than_retry_after():
    assert retry_delay(error(RateLimited, retry_after=2.0), 1, POLICY, rand=lambda: 0.999) == 2.0
    # ...but a longer backoff wins over a short Retry-After.
    assert retry_delay(error(RateLimited, retry_after=0.1), 4, POLICY, rand=lambda: 0.5) == 2.0


def test_a_retry_after_beyond_the_limit_fails_the_job():
    assert retry_delay(error(RateLimited, retry_after=POLICY.max_retry_after + 1), 1, POLICY) is None


def test_long_waits_are_split_below_the_visibility_timeout():
    assert countdown_hop(10.0, visibility_timeout=3600) == 10.0
    assert countdown_hop(5000.0, visibility_timeout=3600) == 1800.0
