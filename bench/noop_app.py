"""A Celery app with one task that does nothing: the floor any Celery-based job system stands on.

It takes flowcloud's own broker and result settings (``celery_settings``), so the
only difference from a flowcloud worker is the work done per task. Its tasks go
to their own queue and keep their results, which the bench awaits.
"""

from __future__ import annotations

from celery import Celery

from workers.celery_app import celery_settings
from workers.config import get_config

NOOP_TASK = "bench.noop"
NOOP_QUEUE = "bench-noop"

app = Celery("bench")
app.conf.update({**celery_settings(get_config()), "task_default_queue": NOOP_QUEUE})


@app.task(name=NOOP_TASK)
def noop() -> None:
    return None
