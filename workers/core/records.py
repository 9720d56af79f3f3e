"""Job records: what a job is doing and, once done, what it produced.

A record is a Redis hash ``flowcloud:job:<id>`` whose values are JSON. Every
write goes through one Lua script that refuses to touch a finished record, so a
redelivered or late duplicate can never overwrite a result or bill a job twice,
and the write that finishes a job announces it on ``flowcloud:done:<id>``.
Shared by the client and the worker; imports nothing worker-side.
"""

from __future__ import annotations

import json
import logging
import time
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pydantic import BaseModel, Field, model_serializer

from flowcloud.workers.core import tally
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.errors import FlowcloudError
from flowcloud.workers.core.money import from_nano, to_nano
from flowcloud.workers.core.redis_conn import connect, queue_script, replies_of

if TYPE_CHECKING:
    import redis

KEY_PREFIX = "flowcloud:job:"
DONE_CHANNEL_PREFIX = "flowcloud:done:"
SPEND_KEY = "flowcloud:spend:nanousd"  # every billed job, in nano-dollars (flowcloud.workers.core.money)
# The jobs a job queued for itself (a summary's chunk jobs), so cancelling it can cancel them.
CHILDREN_PREFIX = "flowcloud:children:"
# How often a waiting reader re-reads the record in case a done message was lost.
WAIT_POLL_SECONDS = 1.0
# flow -> jobs answered from the cache at submit: counted here because the client serves no
# metrics; the workers' metrics endpoint reads it at scrape time.
CACHE_HITS_KEY = "flowcloud:metrics:cache_hits"

log = logging.getLogger(__name__)
# Told of every write that changed a record: (job_id, the fields written plus the record's
# OBSERVED_FIELDS, whether the write billed its cost). The worker sets it at start to feed its
# metrics (flowcloud.tasks.hooks); the client never does. Its failures are logged, never raised.
write_observer: Callable[[str, dict[str, Any], bool], None] | None = None
# Read back by the write script itself, so observing costs no round trip.
OBSERVED_FIELDS = ("submitted_at", "flow")


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Done for good: a record in this status is never written again. The one definition."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


# Equal to their values too: ``"failed" in FINISHED_STATUSES`` holds.
FINISHED_STATUSES = frozenset(status for status in JobStatus if status.finished)


def lua_is_finished(raw: str) -> str:
    """A Lua test that ``raw``, a record's status field as stored (JSON), is a finished status.
    In the enum's order, so the script, and its SHA, is the same in every process."""
    return " or ".join(f"{raw} == '{json.dumps(status.value)}'" for status in JobStatus if status.finished)


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the provider's prompt cache served

    @model_serializer(mode="wrap")
    def _cached_only_when_some(self, dump: Any) -> dict[str, int]:
        # Most answers have none: their usage reads as it always has.
        counts = dump(self)
        return counts if self.cached_tokens else {k: v for k, v in counts.items() if k != "cached_tokens"}


class JobRecord(BaseModel):
    """The result record; ``as_dict()`` is what users, the CLI and Langflow nodes see."""

    job_id: str
    status: JobStatus
    text: str | None = None
    provider: str | None = None
    model: str | None = None
    flow: str | None = None
    worker: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    attempts: int = 0
    cached: bool = False
    error: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] | None = None  # a flow run's outputs, one per output component
    embedding: list[float] | None = None  # an embedding job's vector
    batch_size: int | None = None  # how many jobs shared the provider call that answered this one
    progress: dict[str, int] | None = None  # a summary's chunks_done, chunks_total, depth
    route: dict[str, Any] | None = None  # a routed job: its group, the choice and why, every deployment tried
    savings_usd: dict[str, float] | None = None  # lever (tally.Lever) -> USD saved against the naive call
    submitted_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# KEYS: record, done channel, spend counter, the day's costs, the minute's outcomes, the day's savings
# (flowcloud.workers.core.tally).
# ARGV: ttl, finishes ("1"/"0"), nano-USD, costs ttl, outcomes ttl, n savings, (lever, nano-USD) x n,
# field, value, ...
# The tally's fields are read from the record after the write, so a finishing write that does not
# repeat the flow, provider or model still books them; their format is flowcloud.workers.core.tally's
# cost_field and outcome_field ("-" for a missing part), a saving's the cost field and "|<lever>".
WRITE_UNLESS_FINISHED = """
local status = redis.call('HGET', KEYS[1], 'status')
if """ + lua_is_finished("status") + """ then
  return 0
end
local saved = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7 + 2 * saved))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  local function plain(raw)
    if not raw then return '-' end
    local ok, value = pcall(cjson.decode, raw)
    if ok and type(value) == 'string' and value ~= '' then return value end
    return '-'
  end
  local meta = redis.call('HMGET', KEYS[1], 'flow', 'provider', 'model', 'status')
  local flow, provider, model, final = plain(meta[1]), plain(meta[2]), plain(meta[3]), plain(meta[4])
  if tonumber(ARGV[3]) > 0 then
    redis.call('INCRBY', KEYS[3], ARGV[3])
    redis.call('HINCRBY', KEYS[4], flow .. '|' .. provider .. '|' .. model, ARGV[3])
    redis.call('EXPIRE', KEYS[4], ARGV[4])
  end
  for i = 0, saved - 1 do
    redis.call('HINCRBY', KEYS[6], flow .. '|' .. provider .. '|' .. model .. '|' .. ARGV[7 + 2 * i], ARGV[8 + 2 * i])
  end
  if saved > 0 then
    redis.call('EXPIRE', KEYS[6], ARGV[4])
  end
  redis.call('HINCRBY', KEYS[5], provider .. '|' .. final, 1)
  redis.call('EXPIRE', KEYS[5], ARGV[5])
  redis.call('PUBLISH', KEYS[2], 'done')
end
return redis.call('HMGET', KEYS[1], 'submitted_at', 'flow')
"""


class JobStore:
    """Reads and writes job records in Redis."""

    @classmethod
    def open(cls, config: Config) -> JobStore:
        return cls(connect(config.redis_url_or_embedded()), config.worker.result_ttl)

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self._write = client.register_script(WRITE_UNLESS_FINISHED)

    def create(self, record: JobRecord) -> None:
        self.write(record.job_id, record.as_dict())
        if record.cached:
            self.client.hincrby(CACHE_HITS_KEY, record.flow or "", 1)

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.client.hgetall(KEY_PREFIX + job_id)
        if not raw:
            return None
        return JobRecord.model_validate({key: json.loads(value) for key, value in raw.items()})

    def write(self, job_id: str, fields: dict[str, Any], bill: bool = True) -> bool:
        """Set ``fields`` unless the job already finished; returns whether it wrote.

        A write that sets a finished status also adds the job's cost to the
        spend counter (unless ``bill`` is False: a summary whose cost is the sum
        of child jobs already billed) and wakes readers waiting in ``wait``.
        """
        return self._written(job_id, fields, bill, self._write(**self._write_call(job_id, fields, bill)))

    def write_in(self, pipe: redis.client.Pipeline, job_id: str, fields: dict[str, Any],
                 bill: bool = True) -> Callable[[Iterator[Any]], bool]:
        """``write`` queued on ``pipe``, so it shares a round trip with other commands.

        Returns the reader of its outcome: call it with the pipeline's replies
        (``redis_conn.replies_of``), in the order things were queued.
        """
        result = queue_script(pipe, self._write, **self._write_call(job_id, fields, bill))
        return lambda replies: self._written(job_id, fields, bill, result(next(replies)))

    def _written(self, job_id: str, fields: dict[str, Any], bill: bool, reply: Any) -> bool:
        # 0 when refused, else the record's OBSERVED_FIELDS (JSON or None).
        if reply and write_observer is not None:
            _tell_observer(job_id, fields, reply, bill)
        return bool(reply)

    def create_many(self, records: list[JobRecord]) -> None:
        """``create`` for records that are not finished (queued jobs), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        results = [queue_script(pipe, self._write, **self._write_call(record.job_id, record.as_dict(), bill=False))
                   for record in records]
        for result, reply in zip(results, replies_of(pipe)):
            result(reply)

    def _write_call(self, job_id: str, fields: dict[str, Any], bill: bool) -> dict[str, list[Any]]:
        """The keys and arguments of the write script for one write."""
        status = JobStatus(fields["status"]) if "status" in fields else None
        finishes = status is not None and status.finished
        # job_id goes with every write, so a record rebuilt after expiry (or from a job sent
        # without the client) is still whole.
        pairs: list[Any] = ["job_id", json.dumps(job_id)]
        for key, value in fields.items():
            pairs += [key, json.dumps(value.value if isinstance(value, Enum) else value)]
        cost = to_nano(float(fields.get("cost_usd") or 0.0)) if finishes and bill else 0
        savings = _savings_args(fields.get("savings_usd")) if finishes else []
        now = time.time()
        day = tally.utc_day(now)
        keys = [KEY_PREFIX + job_id, DONE_CHANNEL_PREFIX + job_id, SPEND_KEY,
                tally.costs_key(day), tally.outcomes_key(tally.minute_of(now)), tally.savings_key(day)]
        return {"keys": keys,
                "args": [self.ttl, "1" if finishes else "0", cost, tally.COSTS_TTL, tally.OUTCOMES_TTL,
                         len(savings) // 2, *savings, *pairs]}

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        """The records of ``job_ids`` in order (None where there is none), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(KEY_PREFIX + job_id)
        return [JobRecord.model_validate({key: json.loads(value) for key, value in raw.items()}) if raw else None
                for raw in pipe.execute()]

    def add_children(self, job_id: str, child_ids: list[str]) -> None:
        """Remember that ``job_id`` queued ``child_ids`` (kept as long as its record)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(CHILDREN_PREFIX + job_id, *child_ids)
        pipe.expire(CHILDREN_PREFIX + job_id, self.ttl)
        pipe.execute()

    def children(self, job_id: str) -> list[str]:
        """The jobs ``job_id`` queued for itself, sorted by id."""
        return sorted(self.client.smembers(CHILDREN_PREFIX + job_id))

    def start(self, job_id: str, **fields: Any) -> bool:
        """Mark the job running; False (and nothing written) when it must not run again:
        a redelivery after its result, or a cancelled job. One round trip either way."""
        return self.write(job_id, running(fields))

    def succeed(self, job_id: str, **fields: Any) -> bool:
        return self.write(job_id, succeeded(fields))

    def fail(self, job_id: str, error: FlowcloudError, **fields: Any) -> bool:
        return self.write(job_id, failed(error, fields))

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """The record once finished, or its latest state when ``timeout`` runs out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
            # Subscribe before reading, so a job finishing in between is not missed.
            pubsub.subscribe(DONE_CHANNEL_PREFIX + job_id)
            for remaining in _slices(deadline):
                record = self.get(job_id)
                if record is None or record.status.finished:
                    return record
                pubsub.get_message(timeout=min(remaining, WAIT_POLL_SECONDS))
            return self.get(job_id)

    def finished_among(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` already finished (cancelled ones included), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(KEY_PREFIX + job_id, "status")
        return {job_id for job_id, raw in zip(job_ids, pipe.execute())
                if raw and JobStatus(json.loads(raw)).finished}

    def spent_usd(self) -> float:
        return from_nano(self.client.get(SPEND_KEY))


def running(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that mark a job running, with ``fields``."""
    return {"status": JobStatus.RUNNING, "next_attempt_at": None, **fields}


def succeeded(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that finish a job as succeeded, now, with ``fields``."""
    return {"status": JobStatus.SUCCEEDED, "error": None, "finished_at": time.time(), "next_attempt_at": None,
            **fields}


def failed(error: FlowcloudError, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that finish a job as failed on ``error``, now, with ``fields``."""
    return {"status": JobStatus.FAILED, "error": error.to_record(), "finished_at": time.time(),
            "next_attempt_at": None, **fields}


def _savings_args(savings: dict[str, float] | None) -> list[Any]:
    """A record's ``savings_usd`` as the write script's (lever, nano-USD) arguments; nothing saved is left out."""
    args: list[Any] = []
    for lever, usd in (savings or {}).items():
        nano = to_nano(usd)
        if nano > 0:
            args += [tally.Lever(lever).value, nano]
    return args


def _slices(deadline: float | None) -> Iterator[float]:
    """Seconds left before ``deadline`` on each turn of a wait loop; forever when None."""
    while True:
        remaining = WAIT_POLL_SECONDS if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return
        yield remaining


def _tell_observer(job_id: str, fields: dict[str, Any], written: list[Any], billed: bool) -> None:
    stored = {name: json.loads(value) for name, value in zip(OBSERVED_FIELDS, written) if value}
    try:
        write_observer(job_id, {**stored, **fields}, billed)  # type: ignore[misc]  # checked by the caller
    except Exception:
        log.warning("record write observer failed; the record is written", exc_info=True)
