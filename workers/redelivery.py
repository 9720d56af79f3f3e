"""Brings back the jobs of workers that died mid-job.

With late acks a running job's message waits in kombu's ``unacked`` set until
acknowledged; if its worker is killed, kombu restores it to the queue once it is
older than the visibility timeout. kombu only sweeps from the event loop of the
prefork pool (every 10 x 10 s by default) and on an empty poll of the blocking
loop that the gevent and threads pools use, and a BRPOP that times out still
counts as an answered poll there, so an idle gevent worker never sweeps. This
sweeper runs in every worker, whatever its pool, at a tenth of the visibility
timeout. kombu's own lock makes concurrent sweeps from many workers harmless.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery

log = logging.getLogger(__name__)
MIN_INTERVAL = 1.0
MAX_INTERVAL = 60.0


def sweep_interval(visibility_timeout: float) -> float:
    return min(max(visibility_timeout / 10, MIN_INTERVAL), MAX_INTERVAL)


def restore_unacked(app: Celery) -> None:
    """Requeue every unacked message older than the visibility timeout."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        channel.qos.restore_visible(num=channel.unacked_restore_limit, interval=1)


def start_sweeper(app: Celery, visibility_timeout: float) -> threading.Event:
    """Sweep in a daemon thread (a greenlet under gevent); set the returned event to stop."""
    stop = threading.Event()
    interval = sweep_interval(visibility_timeout)

    def sweep_forever() -> None:
        while not stop.wait(interval):
            try:
                restore_unacked(app)
            except Exception:  # a broker hiccup must not end the sweeping
                log.warning("could not sweep unacked jobs; trying again in %.0f s", interval, exc_info=True)

    threading.Thread(target=sweep_forever, name="flowcloud-redelivery", daemon=True).start()
    return stop
