"""Degraded mode's flag: the one Redis key Beat's checks write and every submitter reads.

``flowcloud:degraded`` holds JSON: ``reason``, ``since``, ``model`` and
``refuse_priority_below``. It is written with a lapse time the checks keep
renewing, so a stopped Beat cannot leave the fleet degraded for ever.
Submitters read it through ``current``, at most once a second per process, so
submitting costs no extra round trip. This module owns the key and nothing
else: when the fleet is degraded is the checks' decision
(``flowcloud.workers.alerts.state``), what a degraded job becomes is
``jobspec.apply_degraded``'s. Imports nothing worker-side.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from flowcloud.workers.core.config import Config
from flowcloud.workers.core.redis_conn import connect

if TYPE_CHECKING:
    import redis

KEY = "flowcloud:degraded"
# How stale a submitter's view may be: a switch reaches every submitter within this.
READ_SECONDS = 1.0
_last_read: tuple[float, dict[str, Any] | None] = (float("-inf"), None)


def read(client: redis.Redis) -> dict[str, Any] | None:
    """The flag as the checks last wrote it, or None when the fleet runs normally."""
    raw = client.get(KEY)
    return json.loads(raw) if raw else None


def current(config: Config) -> dict[str, Any] | None:
    """``read``, at most once per ``READ_SECONDS`` in this process: what submit goes by."""
    global _last_read
    read_at, flag = _last_read
    if time.monotonic() - read_at >= READ_SECONDS:
        flag = read(connect(config.redis_url_or_embedded()))
        _last_read = (time.monotonic(), flag)
    return flag


def write(client: redis.Redis, flag: dict[str, Any], lapse_seconds: int) -> None:
    """Set (or renew) the flag; it clears itself after ``lapse_seconds`` unless written again."""
    client.set(KEY, json.dumps(flag), ex=lapse_seconds)


def clear(client: redis.Redis) -> None:
    client.delete(KEY)
