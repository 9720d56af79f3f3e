"""What the simulator has seen: counters per endpoint and a ring buffer of requests.

Tests read these through ``/_sim/stats`` and ``/_sim/requests`` to check how a
client behaved (how often it retried, how long it waited). Recording must stay
O(1) per request: thousands of requests can be in flight at once.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field

LOG_SIZE = 20_000
PROMPT_LOG_CHARS = 200
# A request whose connection was aborted has no status; it is counted under this.
RESET_LABEL = "reset"


@dataclass
class RequestRecord:
    """One API request as logged: arrival time, outcome, a prompt excerpt, which accepted key it
    carried (its place in the accepted keys; None: none of them) and when its handling ended (for a
    stalled answer, once the client left)."""

    path: str
    t: float = field(default_factory=time.time)
    status: int | None = None
    fault: str | None = None
    prompt: str = ""
    key: int | None = None
    ended: float | None = None

    def as_json(self) -> dict:
        return asdict(self)


class Stats:
    """Counters and the request log, cleared together by ``reset``."""

    def __init__(self, log_size: int = LOG_SIZE) -> None:
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._by_endpoint: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.total = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def begin(self, path: str) -> RequestRecord:
        """Note a request's arrival; pair every call with ``finish``."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return RequestRecord(path=path)

    def finish(self, record: RequestRecord) -> None:
        """Count a finished request and add it to the log."""
        self.in_flight -= 1
        self.total += 1
        record.ended = time.time()
        label = RESET_LABEL if record.status is None else str(record.status)
        self._by_endpoint[record.path][label] += 1
        record.prompt = record.prompt[:PROMPT_LOG_CHARS]
        self._log.append(record)

    def snapshot(self) -> dict:
        """The counters as the JSON body of ``/_sim/stats``."""
        return {
            "total": self.total,
            "by_endpoint": {path: dict(counts) for path, counts in self._by_endpoint.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def recent(self, contains: str | None = None, limit: int = 100) -> list[dict]:
        """The last ``limit`` logged requests whose prompt contains ``contains``.

        Entries are in the order requests finished, oldest first; each carries
        its arrival time ``t``.
        """
        found: list[dict] = []
        for record in reversed(self._log):
            if len(found) >= limit:
                break
            if contains is None or contains in record.prompt:
                found.append(record.as_json())
        found.reverse()
        return found

    def reset(self) -> None:
        """Forget all counts and log entries; requests in flight stay counted."""
        self._log.clear()
        self._by_endpoint.clear()
        self.total = 0
        self.max_in_flight = self.in_flight
