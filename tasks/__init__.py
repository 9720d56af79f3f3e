"""flowcloud's Celery tasks, and the application the workers run: ``celery -A flowcloud.tasks worker``.

Importing this package registers every task, and the worker's signal handlers
(``hooks``), on ``flowcloud.workers.core.celery_app.app``. The client, Beat
and Flower send messages by task name through that light module and never
import this one, nor the engine behind it.
"""

from flowcloud.workers.core.celery_app import app

# Imported for what importing them does: each module registers its tasks on the app, hooks its handlers.
from flowcloud.tasks import alerts, bundle, complete, hooks, run_flow, runs, summarize  # noqa: F401

__all__ = ["app"]
