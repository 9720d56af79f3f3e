"""The Celery application ``flowcloud beat`` runs: flowcloud's app with the schedule from the configuration.

Kept apart from ``flowcloud.workers.core.celery_app`` so workers and clients never build the
schedule, and a bad cron line stops Beat alone, at its start.
"""

from __future__ import annotations

from flowcloud.beat.schedule import beat_schedule, schedule_file
from flowcloud.workers.core.celery_app import app
from flowcloud.workers.core.config import get_config

config = get_config()
app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **beat_schedule(config)}
app.conf.beat_schedule_filename = schedule_file(config)

__all__ = ["app"]
