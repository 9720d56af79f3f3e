"""The Celery application ``flowcloud beat`` runs: flowcloud's settings with the schedule from the configuration.

Kept apart from ``flowcloud.workers.core.celery_app`` so workers and clients never build the
schedule, and a bad cron line stops Beat alone, at its start.
"""

from __future__ import annotations

from flowcloud.beat.schedule import beat_schedule, schedule_file
from flowcloud.workers.core.celery_app import create_app
from flowcloud.workers.core.config import get_config

config = get_config()
app = create_app(config, beat_schedule=beat_schedule(config), beat_schedule_filename=schedule_file(config))

__all__ = ["app"]
