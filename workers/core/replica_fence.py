"""Waiting, after a submit, until a Sentinel group's replica holds the job: the one write nothing redoes.

Replication is asynchronous: a primary killed a moment after a write loses it,
and the promoted replica never saw it. A job's own writes survive that (its
message comes back after the visibility timeout and the record stage sees how
far it got: the record, its spend and the message's ack share one replication
stream, so a lost record means a lost ack), but a queued message that is lost
is a job nobody will run. So the submitter ends with a fence: one write and
``WAIT`` on one round trip, whose reply means a replica holds everything the
primary acknowledged before it, the messages just sent included.

The fence says what it found; the caller resends when the primary changed
under it (``MOVED``), since the messages may have gone down with the old one.
A group with no replica attached (the promoted one standing alone) cannot
confirm anything: that is logged, and fences are skipped for a while rather
than making every submit wait out ``WAIT_MS``. Other Redis URLs have no fence.
"""

from __future__ import annotations

import enum
import logging
import time

from flowcloud.workers.core import redis_conn, redis_sentinel

log = logging.getLogger(__name__)
FENCE_KEY = "flowcloud:replicated"
FENCE_TTL_MS = 60_000
# Replication on a LAN takes well under a millisecond; far longer means no replica is keeping up.
WAIT_MS = 500
ALONE_BACKOFF_SECONDS = 10.0
_skip_until = 0.0


class Fence(str, enum.Enum):
    NONE = "none"  # no Sentinel group, or fences paused after one found no replica
    CONFIRMED = "confirmed"  # a replica holds every write acknowledged before the fence
    ALONE = "alone"  # no replica answered: the writes are on the primary only
    MOVED = "moved"  # the primary changed during the fence: what it acknowledged may be lost


def fence(url: str) -> Fence:
    """Wait until a replica of ``url``'s group holds every write its primary has acknowledged so far."""
    global _skip_until
    if not redis_sentinel.is_sentinel(url) or time.monotonic() < _skip_until:
        return Fence.NONE
    client = redis_conn.connect(url)
    before = client.connection_pool.master_address
    pipe = client.pipeline(transaction=False)
    pipe.set(FENCE_KEY, repr(time.time()), px=FENCE_TTL_MS)
    pipe.wait(1, WAIT_MS)
    replicas = pipe.execute()[1]  # retried across a failover like every command, so it lands somewhere
    after = client.connection_pool.master_address
    if before is not None and after != before:
        log.warning("the Redis primary moved from %s to %s during a submit; sending its messages again",
                    before, after)
        return Fence.MOVED
    if replicas >= 1:
        return Fence.CONFIRMED
    _skip_until = time.monotonic() + ALONE_BACKOFF_SECONDS
    log.warning("no replica of %s confirmed the jobs just queued within %d ms: they are on the primary "
                "only; not asking again for %.0f s", redis_conn.display_url(url), WAIT_MS, ALONE_BACKOFF_SECONDS)
    return Fence.ALONE
