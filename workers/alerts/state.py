"""Alert state in Redis: which alerts fire, since when, when each was last sent; and degraded mode.

Each check reports a ``Condition`` (firing or not) every time it runs. One Lua
script per alert turns that into at most one notice, atomically, so two
workers running the same check at once still send it once:

- not firing -> firing: a FIRING notice;
- still firing: nothing, unless ``repeat_minutes`` passed since it was last sent;
- firing -> not firing: a RESOLVED notice.

An alert is the hash ``flowcloud:alert:<name>``, listed in the set
``flowcloud:alerts``; a resolved one is kept a day for ``flowcloud alerts --all``.
Degraded mode is decided here, from the firing alerts, and written as the flag
``flowcloud.workers.core.degraded`` keeps, which submit reads; the checks renew it
every time they run, or it lapses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowcloud.workers.alerts.sinks import FIRING, RESOLVED, Notice
from flowcloud.workers.core import degraded
from flowcloud.workers.core.config import AlertSettings

if TYPE_CHECKING:
    import redis

ALERT_PREFIX = "flowcloud:alert:"
INDEX_KEY = "flowcloud:alerts"
DEGRADED_ALERT = "degraded"
RESOLVED_TTL = 24 * 3600
# Checks missed before the degraded flag lapses on its own.
DEGRADED_LAPSE_CHECKS = 3

# KEYS: alert hash, index set. ARGV: firing (1/0), now, repeat seconds, summary, details JSON, degrade (1/0),
# name, seconds a resolved alert is kept.
# Returns the notice to send: 'fire', 'repeat', 'resolve' or '' for none.
TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'summary', ARGV[4], 'details', ARGV[5], 'degrade', ARGV[6])
  if state == 'firing' then
    local last = tonumber(redis.call('HGET', KEYS[1], 'last_sent') or '0')
    if tonumber(ARGV[2]) - last < tonumber(ARGV[3]) then return '' end
    redis.call('HSET', KEYS[1], 'last_sent', ARGV[2])
    return 'repeat'
  end
  redis.call('HSET', KEYS[1], 'state', 'firing', 'since', ARGV[2], 'last_sent', ARGV[2])
  redis.call('PERSIST', KEYS[1])
  redis.call('SADD', KEYS[2], ARGV[7])
  return 'fire'
end
if state ~= 'firing' then return '' end
redis.call('HSET', KEYS[1], 'state', 'resolved', 'resolved_at', ARGV[2], 'summary', ARGV[4], 'details', ARGV[5],
           'degrade', '0')
redis.call('EXPIRE', KEYS[1], ARGV[8])
return 'resolve'
"""


@dataclass(frozen=True)
class Condition:
    """What one check found for one alert this time: firing or not, in words and figures.

    ``degrade``: while firing, this alert asks for degraded mode (backlog, an exhausted budget).
    """

    alert: str
    firing: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    degrade: bool = False

    @property
    def kind(self) -> str:
        """The check that raised it: ``budget:daily@80%`` -> ``budget``."""
        return self.alert.split(":", 1)[0]


class AlertBook:
    """Alert states in Redis, turned into notices when they change."""

    def __init__(self, client: redis.Redis, repeat_seconds: float) -> None:
        self.client = client
        self.repeat_seconds = repeat_seconds
        self._transition = client.register_script(TRANSITION)

    def update(self, conditions: list[Condition], now: float) -> list[Notice]:
        """Record each condition; the notices to send (new, repeated and resolved alerts)."""
        notices = []
        for condition in conditions:
            action = self._transition(
                keys=[ALERT_PREFIX + condition.alert, INDEX_KEY],
                args=["1" if condition.firing else "0", now, self.repeat_seconds, condition.summary,
                      json.dumps(condition.details), "1" if condition.degrade else "0", condition.alert,
                      RESOLVED_TTL])
            if action:
                notices.append(Notice(condition.alert, RESOLVED if action == "resolve" else FIRING,
                                      condition.summary, condition.details, repeat=action == "repeat"))
        return notices

    def alerts(self) -> list[dict[str, Any]]:
        """Every known alert, firing first, then by name; alerts whose record expired are dropped."""
        names = sorted(self.client.smembers(INDEX_KEY))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(ALERT_PREFIX + name)
        found, gone = [], []
        for name, raw in zip(names, pipe.execute()):
            if not raw:
                gone.append(name)
                continue
            found.append({"alert": name, **raw, "details": json.loads(raw.get("details") or "{}")})
        if gone:
            self.client.srem(INDEX_KEY, *gone)
        return sorted(found, key=lambda a: (a["state"] != FIRING, a["alert"]))

    def firing(self) -> list[dict[str, Any]]:
        return [alert for alert in self.alerts() if alert["state"] == FIRING]


def degraded_condition(book: AlertBook, settings: AlertSettings) -> Condition | None:
    """Whether degraded mode should be on: some firing alert of a kind ``degraded.triggers`` names asks for it."""
    mode = settings.degraded
    if mode is None:
        return None
    reasons = [a["alert"] for a in book.firing()
               if a.get("degrade") == "1" and a["alert"].split(":", 1)[0] in mode.triggers]
    what = [f"jobs for costlier models go to {mode.model}"] if mode.model else []
    if mode.refuse_priority_below is not None:
        what.append(f"jobs with priority below {mode.refuse_priority_below} are refused")
    summary = (f"degraded mode on ({', '.join(reasons)}): {'; '.join(what)}" if reasons
               else "degraded mode off: jobs run as submitted")
    return Condition(DEGRADED_ALERT, bool(reasons), summary, {"reasons": ", ".join(reasons) or "none"})


def write_degraded_flag(book: AlertBook, settings: AlertSettings, firing: bool, reason: str) -> None:
    """Set (renewing its lapse time) or clear the flag submit reads."""
    mode = settings.degraded
    if not firing or mode is None:
        degraded.clear(book.client)
        return
    since = float(book.client.hget(ALERT_PREFIX + DEGRADED_ALERT, "since") or 0)
    flag = {"reason": reason, "since": since, "model": mode.model,
            "refuse_priority_below": mode.refuse_priority_below}
    lapse = max(DEGRADED_LAPSE_CHECKS * settings.check_seconds, 60)
    degraded.write(book.client, flag, int(lapse))
