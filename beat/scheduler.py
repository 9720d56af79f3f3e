"""The scheduler every flowcloud Beat runs: RedBeat's, with the schedule and a lease in Redis.

Any number of Beats may run against one Redis; the one holding the lease
(``flowcloud:beat::lock``, renewed every tick to ``beat.lock_seconds``) sends,
the others wait in RedBeat's ``beat_init`` hook, asking for it every
``beat.loop_seconds``. A Beat that dies stops renewing, and a standby takes over
once the lease lapses. Each entry's last run time lives in Redis
(``flowcloud:beat:<entry>``) and is advanced before its message goes out, so the
Beat that takes over, or one that restarts, finds every tick already sent: a
Beat killed between the two loses that one tick rather than sending it twice.

What this adds to RedBeat: a standby leaves the schedule alone until it holds
the lease (RedBeat writes its configuration's entries as the scheduler is built,
over the running Beat's), and the lease is renewed again right before each
entry is reserved, so a Beat that was paused past its lease stops before it
sends, not after. It never sends a message itself: Celery's ``apply_async`` does.

On a Sentinel group it hands RedBeat the client ``redis_conn.connect`` makes:
RedBeat's own Sentinel clients retry a lost connection three times, less than a
failover takes, and the lease's renewal would then end Beat.
"""

from __future__ import annotations

from celery.utils.log import get_logger
from redbeat import RedBeatScheduler
from redbeat.schedulers import REDBEAT_REDIS_KEY
from redis.exceptions import LockError

from flowcloud.workers.core import redis_conn, redis_sentinel
from flowcloud.workers.core.errors import BeatLeaseLost, BrokerUnavailable

logger = get_logger("celery.beat")


class LeasedScheduler(RedBeatScheduler):
    """RedBeat's scheduler, writing the schedule and sending only while it holds the lease."""

    merged = False
    lost: BeatLeaseLost | None = None

    def __init__(self, app, *args, **kwargs) -> None:
        url = app.conf.get("flowcloud_redis_url")  # set by beat_settings for a Sentinel group only
        if url and redis_sentinel.is_sentinel(url):  # RedBeat uses a client set on the app instead of making one
            setattr(app, REDBEAT_REDIS_KEY, redis_conn.connect(url))
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        # Called from Scheduler.__init__, before beat_init takes the lease: a standby must not
        # rewrite the schedule of the Beat that is sending. The first tick merges it instead.
        if self.lock is not None:
            super().setup_schedule()

    def tick(self, *args, **kwargs) -> float:
        if not self.merged:
            self.renew()
            super().setup_schedule()  # this Beat's configuration, keeping each entry's last run from Redis
            self.merged = True
            logger.info("beat: holding the lease %s (%ss); sending the schedule", self.lock_key, self.lock_timeout)
        try:
            interval = super().tick(*args, **kwargs)  # RedBeat renews the lease first
        except LockError as exc:
            raise self.lease_lost() from exc
        if self.lost is not None:  # found by a reservation, which Celery's maybe_due logs and swallows
            raise self.lost
        return interval

    def reserve(self, entry):
        self.renew()
        return super().reserve(entry)

    def renew(self) -> None:
        """Extend the lease to a full ``lock_timeout``; raises ``BeatLeaseLost`` once it is not this Beat's."""
        if self.lost is not None:
            raise self.lost
        if self.lock is None:  # RedBeat's beat_init hook failed; Celery logged why and went on
            raise BrokerUnavailable(f"beat: could not take the lease {self.lock_key} in Redis; see the error above")
        try:
            self.lock.extend(int(self.lock_timeout))
        except LockError as exc:
            raise self.lease_lost() from exc

    def lease_lost(self) -> BeatLeaseLost:
        self.lock = None  # not ours: close() must not release another Beat's lease
        self.lost = BeatLeaseLost(f"beat: the lease {self.lock_key} lapsed and may be held by another Beat; "
                                  "this one stops without sending (restart it to stand by)")
        return self.lost
