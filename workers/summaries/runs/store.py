"""Run state kept in Redis between the hops of a scheduled run, and the claims that keep hops apart.

Four kinds of key:

- ``flowcloud:run:<id>`` the run's ``RunState`` as JSON, refreshed by every hop;
- ``flowcloud:run:<id>:hop`` held while one hop runs, so a redelivered or
  duplicate message cannot advance the same run twice at once;
- ``flowcloud:runs:batch-open`` the scheduled ``batch_api`` runs whose outputs
  are still to be written, for the Batch API poll;
- ``flowcloud:schedule:<name>:run`` the id of the schedule's run in progress, so
  a cron that fires again before the last run finished does not start a second
  run over the same output folder. It expires if the run's hops stop (a lost
  message), and the next firing then resumes from the output folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcloud.workers.summaries.runs.engine import RunState
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.redis_conn import EXTEND_IF_OWNER, RELEASE_IF_OWNER, connect

if TYPE_CHECKING:
    import redis

STATE_PREFIX = "flowcloud:run:"
SCHEDULE_PREFIX = "flowcloud:schedule:"
BATCH_RUNS_KEY = "flowcloud:runs:batch-open"
# A week: long enough for a Batch API run (24 h window) and for reading a finished run's state.
STATE_TTL_SECONDS = 7 * 24 * 3600
HOP_LOCK_SECONDS = 300


class RunStore:
    """Run states and claims in the Redis shared by workers."""

    @classmethod
    def open(cls, config: Config) -> RunStore:
        return cls(connect(config.redis_url_or_embedded()))

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # Only the run that holds a schedule's claim may extend or drop it.
        self._extend_if_owner = client.register_script(EXTEND_IF_OWNER)
        self._release_if_owner = client.register_script(RELEASE_IF_OWNER)

    def save(self, state: RunState) -> None:
        self.client.set(STATE_PREFIX + state.run_id, state.model_dump_json(), ex=STATE_TTL_SECONDS)

    def load(self, run_id: str) -> RunState | None:
        raw = self.client.get(STATE_PREFIX + run_id)
        return RunState.model_validate_json(raw) if raw else None

    def add_batch_run(self, run_id: str) -> None:
        self.client.sadd(BATCH_RUNS_KEY, run_id)

    def remove_batch_run(self, run_id: str) -> None:
        self.client.srem(BATCH_RUNS_KEY, run_id)

    def batch_runs(self) -> list[str]:
        return sorted(self.client.smembers(BATCH_RUNS_KEY))

    def claim_hop(self, run_id: str) -> bool:
        """True if this caller may advance the run now; pair with ``release_hop``."""
        return bool(self.client.set(f"{STATE_PREFIX}{run_id}:hop", "1", nx=True, ex=HOP_LOCK_SECONDS))

    def release_hop(self, run_id: str) -> None:
        self.client.delete(f"{STATE_PREFIX}{run_id}:hop")

    def claim_schedule(self, schedule: str, run_id: str, ttl: int) -> str | None:
        """Make ``run_id`` the schedule's active run; returns the id already active instead, if any."""
        key = SCHEDULE_PREFIX + schedule + ":run"
        for _ in range(2):  # the other run's claim may expire between the two calls
            if self.client.set(key, run_id, nx=True, ex=ttl):
                return None
            active = self.client.get(key)
            if active:
                return active
        return "unknown"

    def refresh_schedule(self, schedule: str, run_id: str, ttl: int) -> None:
        self._extend_if_owner(keys=[SCHEDULE_PREFIX + schedule + ":run"], args=[run_id, ttl])

    def release_schedule(self, schedule: str, run_id: str) -> None:
        self._release_if_owner(keys=[SCHEDULE_PREFIX + schedule + ":run"], args=[run_id])
