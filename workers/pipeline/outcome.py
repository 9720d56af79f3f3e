"""How one attempt at a job ends: the value every stage's ``after`` hook is given.

An outcome says what happens to the job next (``Ending``) and carries what that
needs: the answer and its cost, the error, or when to look again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from flowcloud.workers.core.errors import FlowcloudError
from flowcloud.workers.lanes.lane import Answer


class Ending(str, Enum):
    SUCCEEDED = "succeeded"  # the provider answered
    CACHED = "cached"  # an identical job's answer finished it: no call
    FAILED = "failed"  # for good: a permanent error, an exhausted retry, a refused budget, a bad request
    RETRY = "retry"  # a retryable error: attempt n+1 no sooner than not_before
    WAIT = "wait"  # not its turn (an identical job is in flight): the same attempt, later
    SKIPPED = "skipped"  # already finished or cancelled: nothing to do, nothing to write

    @property
    def later(self) -> bool:
        """Whether the job runs again (as a Celery countdown)."""
        return self in (Ending.RETRY, Ending.WAIT)


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    answer: Answer | None = None
    cost_usd: float = 0.0
    cached: dict[str, Any] | None = None  # the cached answer's fields, for CACHED
    error: FlowcloudError | None = None
    not_before: float | None = None  # epoch seconds, for RETRY and WAIT

    @classmethod
    def succeeded(cls, answer: Answer, cost_usd: float) -> Outcome:
        return cls(Ending.SUCCEEDED, answer=answer, cost_usd=cost_usd)

    @classmethod
    def from_cache(cls, fields: dict[str, Any]) -> Outcome:
        return cls(Ending.CACHED, cached=fields)

    @classmethod
    def failed(cls, error: FlowcloudError) -> Outcome:
        return cls(Ending.FAILED, error=error)

    @classmethod
    def retry(cls, error: FlowcloudError, delay: float) -> Outcome:
        return cls(Ending.RETRY, error=error, not_before=time.time() + delay)

    @classmethod
    def wait(cls, delay: float) -> Outcome:
        return cls(Ending.WAIT, not_before=time.time() + delay)

    @classmethod
    def skipped(cls) -> Outcome:
        return cls(Ending.SKIPPED)
