"""Global rate limits: each deployment's ``rpm`` and ``tpm``, shared by every worker process on every host.

One Lua script per job admits it or books it a slot, atomically, for requests
and tokens together. Each deployment keeps one sorted set, a log of the calls
admitted or booked in the last window, in the order they were (their times
never go backwards). A job is admitted now when both limits allow it; when
either refuses, it is *booked* at the earliest time both allow, which is later
than every booking before it. It then waits as a countdown until that time, and
when it comes back the script finds its booking and admits it without asking
again. So the jobs a full window turns away wait in the order they asked, each
for a slot of its own, and wake one by one rather than all at once to race for
the next slot; nothing is consumed from one limit when the other refuses.

Why not the ``limits`` package (5.8): its Redis strategies check one limit per
call (rpm and tpm would be two calls, and a tpm refusal after an rpm hit leaves
the request counted), say only yes or no (when the next slot is takes another
call, and every refused job is told the same instant), take the time from the
calling host's clock, and its moving window stores one list entry per unit of
cost, so a tpm of millions keeps millions of entries.

Redis layout, times in the Redis server's clock (``TIME``), never a host's:

- ``flowcloud:ratelimit:<provider>/<model>``: the log, a sorted set whose
  members are ``<time>|<tokens>|<job id>`` scored by the running sum of tokens,
  so "the tokens in the window" is one subtraction and the oldest entry that
  must leave the window for a job to fit is one ``ZRANGEBYSCORE``.
- ``flowcloud:ratelimit:<provider>/<model>:provider``: what the provider's
  ``x-ratelimit-*`` headers last said (requests and tokens left, when each
  resets); it can only make the limiter stricter.
- ``flowcloud:ratelimit:booking:<job id>``: a booked job's slot.

This module decides nothing about the job: the pipeline's rate-limit stage asks
it and turns a booking into a wait.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Mapping

from flowcloud.workers.core.config import Config
from flowcloud.workers.core.config_routing import DeploymentConfig
from flowcloud.workers.rate_limits.headers import ProviderLimits, read_headers

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "flowcloud:ratelimit:"
BOOKING_PREFIX = "flowcloud:ratelimit:booking:"
PROVIDER_SUFFIX = ":provider"
WINDOW_SECONDS = 60.0  # rpm and tpm are per minute
# A call reaches the provider a little after its admission. Spacing an admission and the one
# ``rpm`` later by the window plus this much keeps them a window apart at the provider too,
# as long as one's way there is not this much slower than the other's.
GUARD_SECONDS = 0.5
# Bookings are at least this far apart, so jobs booked behind a burst do not all wake in the same instant.
BOOKING_SPACING_SECONDS = 0.01
# A job that comes back this little before its slot (clocks, countdown rounding) is admitted.
EARLY_TOLERANCE_SECONDS = 0.05
# Old log entries dropped per call: more than the one each call adds, so the log shrinks as it ages.
TRIM_PER_CALL = 8

# KEYS: the log, the provider's word, the job's booking.
# ARGV: rpm (0: none), tpm (0: none), the job's tokens (at most tpm), window seconds, job id,
#       early tolerance, booking spacing, trim per call.
# Returns the seconds the job waits: '0' when admitted now.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local booked = redis.call('GET', KEYS[3])
if booked then
  local slot = tonumber(booked)
  if slot > now + tonumber(ARGV[6]) then return tostring(slot - now) end
  redis.call('DEL', KEYS[3])
  return '0'
end
local function time_of(member) return tonumber(string.match(member, '^([^|]+)')) end
local function tokens_of(member) return tonumber(string.match(member, '^[^|]+|([^|]+)')) end
for i = 1, tonumber(ARGV[8]) do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)
  if not oldest[1] or time_of(oldest[1]) > now - window then break end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
end
local slot, sum = now, 0
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[1] then
  sum = tonumber(last[2])
  -- Never before a booking already made: who asked first goes first.
  if time_of(last[1]) > now then slot = time_of(last[1]) + tonumber(ARGV[7]) end
end
if rpm > 0 then
  local nth = redis.call('ZRANGE', KEYS[1], -rpm, -rpm)
  if nth[1] then slot = math.max(slot, time_of(nth[1]) + window) end
end
if tpm > 0 then
  -- The tokens in the window after entry e are sum - score(e): the first entry whose score
  -- reaches sum + tokens - tpm is the last one that must leave the window first.
  local target = sum + tokens - tpm
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], target, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if first[1] and tonumber(first[2]) - tokens_of(first[1]) < target then
    slot = math.max(slot, time_of(first[1]) + window)
  end
end
local said = redis.call('HMGET', KEYS[2], 'requests', 'requests_reset', 'tokens', 'tokens_reset')
if said[2] and tonumber(said[2]) > slot and tonumber(said[1]) < 1 then slot = tonumber(said[2]) end
if said[4] and tonumber(said[4]) > slot and tonumber(said[3]) < tokens then slot = tonumber(said[4]) end
if said[2] and tonumber(said[2]) > slot then redis.call('HINCRBY', KEYS[2], 'requests', -1) end
if said[4] and tonumber(said[4]) > slot then redis.call('HINCRBY', KEYS[2], 'tokens', -tokens) end
redis.call('ZADD', KEYS[1], sum + tokens, string.format('%.6f|%d|%s', slot, tokens, ARGV[5]))
redis.call('EXPIRE', KEYS[1], math.ceil(slot - now + window) + 1)
if slot <= now then return '0' end
redis.call('SET', KEYS[3], string.format('%.6f', slot), 'EX', math.ceil(slot - now + window) + 60)
return tostring(slot - now)
"""

# KEYS: the provider's word. ARGV: requests left, seconds until they reset, tokens left, seconds
# until they reset ('' when the provider did not say). Replaces what it said before.
TIGHTEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local longest = 0
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'requests', ARGV[1], 'requests_reset', string.format('%.6f', now + tonumber(ARGV[2])))
  longest = math.max(longest, tonumber(ARGV[2]))
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'tokens', ARGV[3], 'tokens_reset', string.format('%.6f', now + tonumber(ARGV[4])))
  longest = math.max(longest, tonumber(ARGV[4]))
end
redis.call('EXPIRE', KEYS[1], math.ceil(longest) + 1)
return 1
"""


def limited(deployment: DeploymentConfig) -> bool:
    return bool(deployment.rpm or deployment.tpm)


def limited_deployments(config: Config) -> dict[str, DeploymentConfig]:
    """Every deployment of the configuration's model groups with an rpm or tpm, by id."""
    return {d.id: d for group in config.model_groups for d in group.chain if limited(d)}


def stricter_than(said: ProviderLimits, deployment: DeploymentConfig) -> ProviderLimits:
    """What the provider said that could hold a job back: a count left that is at least the deployment's
    own limit per minute is not (its own log admits no more than that before a per-minute reset), so
    the usual reply, with plenty left, costs no Redis call."""
    requests, tokens = (said.requests, said.requests_reset), (said.tokens, said.tokens_reset)
    if deployment.rpm and said.requests is not None and said.requests >= deployment.rpm:
        requests = (None, None)
    if deployment.tpm and said.tokens is not None and said.tokens >= deployment.tpm:
        tokens = (None, None)
    return ProviderLimits(*requests, *tokens)


class Limiter:
    """Admits calls to rate-limited deployments, or books them the earliest slot both limits allow.

    ``window_seconds`` is what the limits are per: a minute, as ``rpm`` and ``tpm`` say; tests shorten it.
    """

    def __init__(self, client: redis.Redis, deployments: Mapping[str, DeploymentConfig],
                 window_seconds: float = WINDOW_SECONDS, guard_seconds: float = GUARD_SECONDS) -> None:
        self.client = client
        self.deployments = dict(deployments)
        self.window_seconds = window_seconds
        self.guard_seconds = guard_seconds
        self._acquire = client.register_script(ACQUIRE)
        self._tighten = client.register_script(TIGHTEN)

    @classmethod
    def for_config(cls, client: redis.Redis, config: Config) -> Limiter | None:
        """The limiter of ``config``'s limited deployments; None when none has a limit."""
        deployments = limited_deployments(config)
        return cls(client, deployments) if deployments else None

    def acquire(self, job_id: str, deployment: DeploymentConfig, tokens: int) -> float:
        """Admit one call of ``tokens`` tokens to ``deployment`` for job ``job_id``: 0.0 when it may go now,
        else the seconds until its booked slot (a job that comes back for its slot is admitted)."""
        tpm = deployment.tpm or 0
        if tpm and tokens > tpm:
            log.warning("job %s: %d tokens exceed %s's tpm %d; counted as %d, so it waits for an empty window",
                        job_id, tokens, deployment.id, tpm, tpm)
        args = [deployment.rpm or 0, tpm, max(min(tokens, tpm) if tpm else tokens, 1),
                self.window_seconds + self.guard_seconds, job_id, EARLY_TOLERANCE_SECONDS,
                BOOKING_SPACING_SECONDS, TRIM_PER_CALL]
        wait = float(self._acquire(keys=self.keys(deployment.id, job_id), args=args))
        if wait > 0:
            log.debug("job %s: %s is at its limit; booked in %.2f s", job_id, deployment.id, wait)
        return wait

    def keys(self, deployment_id: str, job_id: str) -> list[str]:
        log_key = KEY_PREFIX + deployment_id
        return [log_key, log_key + PROVIDER_SUFFIX, BOOKING_PREFIX + job_id]

    def tighten(self, deployment_id: str, said: ProviderLimits) -> None:
        """Take what the provider said is left of its own limits (it only ever holds jobs back)."""
        if said.empty:
            return
        args = ["" if v is None else v for v in (said.requests, said.requests_reset, said.tokens, said.tokens_reset)]
        self._tighten(keys=[KEY_PREFIX + deployment_id + PROVIDER_SUFFIX], args=args)

    def observe(self, provider: str, model: str, headers: Mapping[str, str]) -> None:
        """A provider reply's headers: its ``x-ratelimit-*`` ones tighten a limited deployment's limiter."""
        deployment = self.deployments.get(f"{provider}/{model}")
        if deployment is not None:
            self.tighten(deployment.id, stricter_than(read_headers(headers), deployment))
