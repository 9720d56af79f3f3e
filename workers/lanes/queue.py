"""Where batched jobs meet: one Redis list per lane, a short-lived flusher lock, a mailbox per job.

There is no dispatcher process: every waiting job helps. A job joins its lane's
list; whoever holds the lane's flusher lock waits until the list holds
``max_size`` entries, or no entry has joined for ``flush_ms``, or its oldest
entry has waited ``max_wait_ms`` (by Redis's clock, so hosts need not agree on
the time), takes up to ``max_size`` entries
in one atomic step, releases the lock and runs the batch. Each member then
finds its own outcome in its mailbox::

    join ──> lane list ──(lock holder: full, quiet for flush_ms, or max_wait_ms)──> run the batch ──> a mailbox per job

Waiting for a quiet moment rather than a fixed time from the first entry lets
a lane fill while prompts keep arriving (a worker takes in jobs a few
milliseconds apart), and ``max_wait_ms`` bounds what the first one pays.

A flush that leaves entries behind hands the lock straight to the oldest of
them, so a long lane drains batch after batch without pause. No entry is
stranded. A member whose entry is still listed takes the lock
itself whenever it is free; a member whose batch was taken hears so at once
("taken") and then waits one provider call; a member whose batch never answers
(its flusher died) leaves the list and is told to go alone. This module knows
nothing of providers or records: ``run`` turns taken entries into outcomes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "flowcloud:batch:"
MAILBOX_PREFIX = "flowcloud:batch-reply:"
# Outcomes the protocol itself sends; the rest are whatever ``run`` returns.
TAKEN = {"kind": "taken"}
ALONE = {"kind": "alone"}
# The lock is yours: a flush that left entries behind hands the lane to the oldest of them at once,
# rather than leaving it to whichever waiting member next wakes up and finds the lock free.
LEAD = {"kind": "lead"}
# Slack on top of one provider call before a member stops waiting for its batch.
MARGIN_SECONDS = 5.0
# One blocking read stays well under the Redis client's socket timeout (5 s by default).
LONGEST_BLOCK_SECONDS = 1.0
# Whoever holds the lock checks the list this many times per flush interval, to flush a full batch early.
CHECKS_PER_FLUSH = 5

# KEYS: lane list, flusher lock. ARGV: entry, owner, lock ttl ms, list ttl ms.
# Returns {stored item, 1 if the caller now holds the lock else 0}.
JOIN = """
local t = redis.call('TIME')
local item = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) .. '|' .. ARGV[1]
redis.call('RPUSH', KEYS[1], item)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {item, 1} end
return {item, 0}
"""
# KEYS: lane list, flusher lock. ARGV: owner, max size, flush ms (quiet time), max wait ms (first entry),
# mailbox prefix, lock ttl ms, mailbox ttl ms.
# Returns {-1} lock lost, {0} list empty (lock released), {1, ms to wait}, or {2, item...}: the batch, with
# the lock handed to the oldest entry left, told so in its mailbox (or released when none is left).
TAKE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1} end
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then
  redis.call('DEL', KEYS[2])
  return {0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waited = now - tonumber(string.match(first, '^(%d+)|'))
local quiet = now - tonumber(string.match(redis.call('LINDEX', KEYS[1], -1), '^(%d+)|'))
local size, flush = tonumber(ARGV[2]), tonumber(ARGV[3])
local longest = tonumber(ARGV[4]) or flush
if redis.call('LLEN', KEYS[1]) < size and quiet < flush and waited < longest then
  return {1, math.min(flush - quiet, longest - waited)}
end
local items = redis.call('LRANGE', KEYS[1], 0, size - 1)
redis.call('LTRIM', KEYS[1], size, -1)
redis.call('DEL', KEYS[2])
local nxt = redis.call('LINDEX', KEYS[1], 0)
if nxt then
  local ok, entry = pcall(cjson.decode, string.sub(nxt, string.find(nxt, '|', 1, true) + 1))
  if ok and type(entry) == 'table' and type(entry.reply) == 'string' then
    redis.call('SET', KEYS[2], entry.reply, 'PX', ARGV[6])
    redis.call('RPUSH', ARGV[5] .. entry.reply, ARGV[8])
    redis.call('PEXPIRE', ARGV[5] .. entry.reply, ARGV[7])
  end
end
table.insert(items, 1, 2)
return items
"""
LOST, EMPTY, WAIT, TAKEN_CODE = -1, 0, 1, 2


@dataclass(frozen=True)
class Window:
    """How one lane collects: its key, how many entries a batch holds, how long a quiet lane
    waits before it flushes, and how long its first entry may wait at most (default: flush_ms)."""

    key: str
    max_size: int
    flush_ms: int
    call_seconds: float
    max_wait_ms: int | None = None

    @property
    def longest_ms(self) -> int:
        return max(self.max_wait_ms or self.flush_ms, self.flush_ms)

    @property
    def lock_key(self) -> str:
        return f"{KEY_PREFIX}{self.key}:flusher"

    @property
    def list_key(self) -> str:
        return KEY_PREFIX + self.key

    def lock_ttl_ms(self) -> int:
        # Outlives the holder's longest sleep; a holder that dies frees the lane this soon.
        return self.longest_ms + 1000

    def reply_ttl_ms(self) -> int:
        return int((self.call_seconds + MARGIN_SECONDS) * 1000) + self.longest_ms


@dataclass(frozen=True)
class Entry:
    """One waiting job in a lane: its id, its text and the mailbox its outcome goes to."""

    job_id: str
    text: str
    reply: str

    @classmethod
    def from_item(cls, item: str) -> Entry:
        data = json.loads(item.split("|", 1)[1])
        return cls(data["job"], data["text"], data["reply"])


Run = Callable[[list[Entry]], list[dict[str, Any]]]


class BatchQueue:
    """The Redis side of batching, shared by every job of one worker process."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._join = client.register_script(JOIN)
        self._take = client.register_script(TAKE)

    def await_outcome(self, window: Window, job_id: str, text: str, run: Run) -> dict[str, Any]:
        """Join ``window``'s lane, help flush it, and return this job's outcome.

        ``run`` makes the call for the entries a flush takes and returns one
        outcome per entry, in their order. Returns ``ALONE`` when the batch
        never answered.
        """
        me = Entry(job_id, text, uuid.uuid4().hex)
        item, leads = self._join(
            keys=[window.list_key, window.lock_key],
            args=[json.dumps({"job": job_id, "text": text, "reply": me.reply}), me.reply,
                  window.lock_ttl_ms(), window.reply_ttl_ms()])
        deadline = time.monotonic() + window.reply_ttl_ms() / 1000
        taken = False
        while True:
            if leads:
                flushed, own = self._flush(window, me, run)
                if own is not None:
                    return own
                if flushed:  # a batch of older entries went; this one may be next
                    leads = self._try_lead(window, me)
                    continue
            wait = deadline - time.monotonic() if taken else window.flush_ms / 1000
            outcome = self._receive(me.reply, min(wait, LONGEST_BLOCK_SECONDS))
            if outcome == LEAD:
                leads = True
                continue
            if outcome == TAKEN:
                taken, leads = True, False
                deadline = time.monotonic() + window.call_seconds + MARGIN_SECONDS
                continue
            if outcome is not None:
                return outcome
            if time.monotonic() >= deadline:
                self.client.lrem(window.list_key, 1, item)
                log.warning("job %s: its batch in lane %s never answered; sending it alone", job_id, window.key)
                return ALONE
            leads = not taken and self._try_lead(window, me)

    def _try_lead(self, window: Window, me: Entry) -> bool:
        return bool(self.client.set(window.lock_key, me.reply, nx=True, px=window.lock_ttl_ms()))

    def _flush(self, window: Window, me: Entry, run: Run) -> tuple[bool, dict[str, Any] | None]:
        """Collect and run one batch: (whether there was one, this job's own outcome if it was in it)."""
        entries = self._collect(window, me.reply)
        if not entries:
            return False, None
        others = [entry for entry in entries if entry.reply != me.reply]
        self._post([(entry, TAKEN) for entry in others], window)
        try:
            outcomes = run(entries)
        except Exception:
            self._post([(entry, ALONE) for entry in others], window)  # nobody waits out a call that never comes
            raise
        own = None
        replies = []
        for entry, outcome in zip(entries, outcomes):
            if entry.reply == me.reply:
                own = outcome
            else:
                replies.append((entry, outcome))
        self._post(replies, window)
        return True, own

    def _collect(self, window: Window, owner: str) -> list[Entry]:
        """As lock holder: wait until the lane is full or old enough, then take a batch."""
        check_ms = max(window.flush_ms / CHECKS_PER_FLUSH, 1.0)
        while True:
            code, *rest = self._take(keys=[window.list_key, window.lock_key],
                                     args=[owner, window.max_size, window.flush_ms, window.longest_ms,
                                           MAILBOX_PREFIX, window.lock_ttl_ms(), window.reply_ttl_ms(),
                                           json.dumps(LEAD)])
            if code == TAKEN_CODE:
                return [Entry.from_item(item) for item in rest]
            if code != WAIT:  # the list is empty, or the lock expired and another job collects now
                return []
            time.sleep(min(rest[0], check_ms) / 1000)

    def _post(self, outcomes: list[tuple[Entry, dict[str, Any]]], window: Window) -> None:
        if not outcomes:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry, outcome in outcomes:
            pipe.rpush(MAILBOX_PREFIX + entry.reply, json.dumps(outcome))
            pipe.pexpire(MAILBOX_PREFIX + entry.reply, window.reply_ttl_ms())
        pipe.execute()

    def _receive(self, reply: str, timeout: float) -> dict[str, Any] | None:
        found = self.client.blpop([MAILBOX_PREFIX + reply], timeout=max(timeout, 0.01))
        return json.loads(found[1]) if found else None
