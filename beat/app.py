"""The Celery application ``flowcloud beat`` runs: flowcloud's settings with the schedule from the configuration
and RedBeat's scheduler, which keeps the schedule and the lease in Redis (``flowcloud.beat.scheduler``).

Kept apart from ``flowcloud.workers.core.celery_app`` so workers and clients never build the
schedule, and a bad cron line stops Beat alone, at its start.
"""

from __future__ import annotations

from flowcloud.beat.schedule import beat_schedule
from flowcloud.workers.core.celery_app import beat_settings, create_app
from flowcloud.workers.core.config import get_config

config = get_config()
app = create_app(config, beat_schedule=beat_schedule(config), **beat_settings(config))

__all__ = ["app"]
