"""What every worker on every host knows of each deployment: its circuit, its latency, its load.

One Redis hash per deployment, ``flowcloud:deployment:<provider>/<model>``, owned
here. Its circuit breaker counts the calls of the last ``window_seconds`` in ten
buckets; a failure ratio over the window (with at least ``min_calls`` calls)
opens it. An open circuit is skipped by the router until ``open_seconds`` have
passed; then one job at a time may claim a probe (``claim_probe``), whose
success closes the circuit and whose failure opens it again. Each call's
result, latency and output tokens are recorded by one script queued on the
job's last round trip (``record_in``); the state is read on its first
(``read_in``), so routing costs no round trip of its own, except the claim of a
probe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import redis
from redis.client import Pipeline as RedisPipeline

from flowcloud.workers.core.config_routing import CircuitSettings, DeploymentConfig
from flowcloud.workers.core.redis_conn import queue_script

KEY_PREFIX = "flowcloud:deployment:"
STATE_TTL_SECONDS = 7 * 86_400
# Weight of the newest call in the moving averages of latency and output tokens.
EWMA_ALPHA = 0.2

# KEYS: the deployment's hash. ARGV: now, ok (1/0), counts for the circuit (1/0), latency ms (-1: none),
# output tokens (-1: none), busy change, failure ratio, min calls, window seconds, ttl, alpha.
# Returns the circuit's state after the call.
RECORD = """
local key, now = KEYS[1], tonumber(ARGV[1])
local ok, counted = ARGV[2] == '1', ARGV[3] == '1'
local latency, output, busy = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ratio, min_calls, window = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local alpha = tonumber(ARGV[11])
local function average(field, value)
  local old = tonumber(redis.call('HGET', key, field))
  redis.call('HSET', key, field, old and (old + alpha * (value - old)) or value)
end
if busy ~= 0 and redis.call('HINCRBY', key, 'busy', busy) < 0 then redis.call('HSET', key, 'busy', 0) end
if latency >= 0 then average('latency_ms', latency) end
if output >= 0 then average('output_tokens', output) end
local state = redis.call('HGET', key, 'state') or 'closed'
if counted then
  local width = window / 10
  local bucket = math.floor(now / width)
  redis.call('HINCRBY', key, 'b:' .. bucket .. (ok and ':ok' or ':fail'), 1)
  local calls, fails, stale = 0, 0, {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local at, result = string.match(fields[i], '^b:(%d+):(%a+)$')
    if at then
      if tonumber(at) <= bucket - 10 then
        table.insert(stale, fields[i])
      else
        calls = calls + tonumber(fields[i + 1])
        if result == 'fail' then fails = fails + tonumber(fields[i + 1]) end
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  local opens = (state == 'half_open' and not ok) or
                (state == 'closed' and not ok and calls >= min_calls and fails / calls >= ratio)
  if opens or (state == 'half_open' and ok) then
    state = opens and 'open' or 'closed'
    redis.call('HSET', key, 'state', state, 'opened_at', now)
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 2) == 'b:' then redis.call('HDEL', key, fields[i]) end
    end
  end
end
redis.call('EXPIRE', key, ARGV[10])
return state
"""

# KEYS: the deployment's hash. ARGV: now, open seconds, lease seconds. 1 when this job is the probe.
CLAIM_PROBE = """
local state = redis.call('HGET', KEYS[1], 'state')
local now = tonumber(ARGV[1])
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
local probe = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if (state == 'open' and now >= opened + tonumber(ARGV[2])) or (state == 'half_open' and now >= probe) then
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[3]))
  return 1
end
return 0
"""

FIELDS = ("state", "opened_at", "probe_until", "latency_ms", "output_tokens", "busy")


@dataclass(frozen=True)
class Health:
    """One deployment as the fleet last saw it."""

    state: str = "closed"
    opened_at: float = 0.0
    probe_until: float = 0.0
    latency_ms: float | None = None
    output_tokens: float | None = None
    busy: int = 0

    def open_until(self, circuit: CircuitSettings) -> float:
        """When the circuit may next be probed (0 when closed)."""
        if self.state == "open":
            return self.opened_at + circuit.open_seconds
        return self.probe_until if self.state == "half_open" else 0.0

    @classmethod
    def from_reply(cls, reply: list[Any]) -> Health:
        state, opened, probe, latency, output, busy = (_text(v) for v in reply)
        return cls(state or "closed", float(opened or 0), float(probe or 0),
                   float(latency) if latency else None, float(output) if output else None, int(busy or 0))


class Fleet:
    """The shared state of every deployment, in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._record = client.register_script(RECORD)
        self._claim = client.register_script(CLAIM_PROBE)

    def read_in(self, pipe: RedisPipeline, deployments: list[DeploymentConfig],
                ) -> Callable[[Iterator[Any]], dict[str, Health]]:
        """Queue a read of each deployment's state; the reader returns them by deployment id."""
        for deployment in deployments:
            pipe.hmget(key(deployment), *FIELDS)

        def read(replies: Iterator[Any]) -> dict[str, Health]:
            return {d.id: Health.from_reply(next(replies)) for d in deployments}

        return read

    def claim_probe(self, deployment: DeploymentConfig, circuit: CircuitSettings, lease: float) -> bool:
        """Whether this job may be the one probe of ``deployment``'s open circuit (its own round trip)."""
        return self._claim(keys=[key(deployment)], args=[time.time(), circuit.open_seconds, lease]) == 1

    def busy(self, deployment: DeploymentConfig, change: int) -> None:
        self.client.hincrby(key(deployment), "busy", change)

    def record_in(self, pipe: RedisPipeline, deployment: DeploymentConfig, circuit: CircuitSettings, *,
                  ok: bool, counted: bool, latency_ms: float | None, output_tokens: int | None,
                  busy: int = 0) -> Callable[[Any], Any]:
        """Queue one call's result; the reader returns the circuit's state after it."""
        args = [time.time(), int(ok), int(counted), -1 if latency_ms is None else latency_ms,
                -1 if output_tokens is None else output_tokens, busy, circuit.failure_ratio, circuit.min_calls,
                circuit.window_seconds, STATE_TTL_SECONDS, EWMA_ALPHA]
        return queue_script(pipe, self._record, [key(deployment)], args)

    def health(self, deployment: DeploymentConfig) -> Health:
        return Health.from_reply(self.client.hmget(key(deployment), *FIELDS))

    def healths(self, deployments: list[DeploymentConfig]) -> dict[str, Health]:
        """Every deployment's state by id, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        read = self.read_in(pipe, deployments)
        return read(iter(pipe.execute()))


def key(deployment: DeploymentConfig) -> str:
    return KEY_PREFIX + deployment.id


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
